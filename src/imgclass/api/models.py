"""``GET /api/v1/models``: what model this process serves."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from imgclass.app import services

bp = Blueprint("models", __name__, url_prefix="/api/v1")


@bp.get("/models")
def list_models():
    classifier = services(current_app).predictor.classifier
    if classifier is None:
        return jsonify(models=[])
    info = classifier.info
    return jsonify(
        models=[
            {
                "name": info.name,
                "version": info.version,
                "precision": info.precision,
                "input_size": [3, info.input_size, info.input_size],
                "runtime": info.runtime,
                "sha256": info.sha256,
                "classes": len(classifier.labels),
            }
        ]
    )
