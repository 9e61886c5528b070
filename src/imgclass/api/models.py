"""``GET /api/v1/models``: the models this process serves, their roles and breaker state."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from imgclass.app import services
from imgclass.vision.classifier import Classifier

bp = Blueprint("models", __name__, url_prefix="/api/v1")


@bp.get("/models")
def list_models():
    """The models this process serves.
    ---
    get:
      summary: Loaded models (primary and fallback) and the circuit breaker
      tags: [models]
      responses:
        "200":
          description: the models, their roles and the breaker state
          content:
            application/json:
              schema: ModelsResponse
    """
    chain = services(current_app).predictor.models
    models = []
    if chain.primary is not None:
        models.append({**_describe(chain.primary), "role": "primary"})
    if chain.fallback is not None:
        models.append({**_describe(chain.fallback), "role": "fallback"})
    return jsonify(
        models=models,
        circuit_breaker=chain.breaker_state,
        primary_error=chain.primary_error,
    )


def _describe(classifier: Classifier) -> dict:
    info = classifier.info
    return {
        "name": info.name,
        "version": info.version,
        "precision": info.precision,
        "input_size": [3, info.input_size, info.input_size],
        "runtime": info.runtime,
        "sha256": info.sha256,
        "classes": len(classifier.labels),
    }
