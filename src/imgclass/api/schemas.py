"""The JSON bodies the API sends and accepts, as types the OpenAPI spec is generated from.

The views build their bodies as plain dicts; these ``TypedDict``s say what those dicts hold,
and ``api/openapi.py`` turns them (and the pydantic models and dataclasses that already
describe backups and drift reports) into JSON Schema with pydantic. The schemathesis run in
``tests/api/test_fuzz_api.py`` checks every answer against them, so they cannot drift from
what the code sends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from imgclass.ops.drift import FeatureDrift, WindowSummary
from imgclass.warehouse.backup import Manifest, Verification

Score = Annotated[float, Field(ge=0, le=1)]
ClassId = Annotated[int, Field(ge=0, le=999)]
Cell = str | int | float | bool | None  # one value of an analytics row


class ErrorDetail(TypedDict):
    code: Annotated[str, Field(description="stable machine-readable code, e.g. corrupt_image")]
    message: Annotated[str, Field(description="what went wrong and what to fix")]
    request_id: str | None


class Error(TypedDict):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorDetail


class ModelRef(TypedDict):
    name: str
    version: str
    fallback: Annotated[bool, Field(description="true when the fallback model answered")]


class Prediction(TypedDict):
    class_id: ClassId
    label: str
    score: Score


class ImageResult(TypedDict):
    filename: str
    predictions: list[Prediction]
    time_ms: Annotated[float, Field(ge=0)]
    cached: Annotated[bool, Field(description="answered from the result cache")]
    model: ModelRef


class PredictResponse(TypedDict):
    request_id: str
    model: Annotated[ModelRef, Field(description="the model that answered the uncached images")]
    results: Annotated[list[ImageResult], Field(description="one per uploaded file, in order")]


class PredictForm(TypedDict):
    image: Annotated[
        list[Annotated[bytes, Field(min_length=1)]],
        Field(
            min_length=1,
            description="one or more image files (JPEG, PNG, GIF, WebP, BMP, TIFF)",
        ),
    ]


class ModelDescription(TypedDict):
    name: str
    version: str
    precision: str
    input_size: list[int]
    runtime: str
    sha256: str
    classes: int
    role: Literal["primary", "fallback"]


class ModelsResponse(TypedDict):
    models: list[ModelDescription]
    circuit_breaker: Literal["closed", "open", "half-open"]
    primary_error: str | None


class Health(TypedDict):
    status: Literal["ok"]


class Readiness(TypedDict):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
    reasons: NotRequired[list[str]]


class FeedbackRequest(TypedDict):
    """Exactly one of ``class_id`` and ``label``; at most one of ``filename`` and ``index``."""

    __pydantic_config__ = ConfigDict(  # type: ignore[misc]
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["class_id"]}, {"required": ["label"]}],
            "not": {"required": ["filename", "index"]},
        },
    )
    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    class_id: NotRequired[ClassId]
    label: NotRequired[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=200,
                description="an ImageNet name ('tabby', 'tabby, tabby cat'), a class label "
                "as the analytics write it ('Egyptian_cat') or a WordNet id ('n02123045')",
            ),
        ]
    ]
    filename: NotRequired[Annotated[str, Field(min_length=1, max_length=255)]]
    index: NotRequired[Annotated[int, Field(ge=0)]]


class ClassRef(TypedDict):
    class_id: ClassId
    label: str
    wnid: str | None


class FeedbackResponse(TypedDict):
    request_id: str
    index: int
    filename: str
    model: dict[str, str]
    predicted: ClassRef
    true_class: ClassRef
    is_correct: bool
    replaced: Annotated[bool, Field(description="an earlier feedback for this image was replaced")]


class BackupListEntry(Manifest):
    """A backup's manifest and the outcome of its last verification (null: never verified)."""

    verification: Verification | None


class BackupList(TypedDict):
    destination: str
    last_backup_age_seconds: Annotated[
        float | None, Field(description="age of the newest backup; null when there is none")
    ]
    backups: Annotated[list[BackupListEntry], Field(description="newest first")]


class DriftReport(TypedDict):
    """``ops.drift.DriftReport.to_dict()``: the report with the names of drifted features."""

    computed_at: datetime
    status: Literal["ok", "drift", "insufficient_data"]
    message: str
    threshold: float
    min_events: int
    reference: WindowSummary
    recent: WindowSummary
    features: list[FeatureDrift]
    drifted: list[str]


class CubeResponse(TypedDict):
    dimensions: list[str]
    measures: list[str]
    rows: list[dict[str, Cell]]
    truncated: bool
    pivot: NotRequired[str]
    columns: NotRequired[list[str]]
    totals: NotRequired[dict[str, Cell]]
    subtotals: NotRequired[list[dict[str, Cell]]]


class DayCounts(TypedDict):
    requests: int
    errors: int


class Summary(TypedDict):
    totals: dict[str, Cell]
    today: DayCounts
    yesterday: DayCounts
    top_classes: list[dict[str, Cell]]
    top_users: list[dict[str, Cell]]
    errors_by_code: list[dict[str, Cell]]
    models: list[dict[str, Cell]]


class Timeseries(TypedDict):
    grain: Literal["minute", "hour", "day", "week", "month"]
    measures: list[str]
    rows: list[dict[str, Cell]]


class Event(TypedDict):
    event_time: str
    request_id: str
    user: str
    ip: str | None
    class_: Annotated[str | None, Field(alias="class")]
    confidence: float | None
    time_ms: float | None
    status: int
    error_code: str | None
    model: str
    cache_hit: bool
    fallback: bool
    filename: str | None


class Events(TypedDict):
    rows: list[Event]


class Concept(TypedDict):
    wnid: str
    name: str
    depth: int


class ConceptChild(Concept):
    requests: int
    class_: Annotated[str | None, Field(alias="class")]


class Concepts(TypedDict):
    concept: Concept | None
    path: list[Concept]
    children: list[ConceptChild]


# Name in the spec -> the type its schema is generated from.
SCHEMAS: dict[str, Any] = {
    "Error": Error,
    "PredictResponse": PredictResponse,
    "PredictForm": PredictForm,
    "ModelsResponse": ModelsResponse,
    "Health": Health,
    "Readiness": Readiness,
    "FeedbackRequest": FeedbackRequest,
    "FeedbackResponse": FeedbackResponse,
    "DriftReport": DriftReport,
    "BackupManifest": Manifest,
    "BackupList": BackupList,
    "CubeResponse": CubeResponse,
    "Summary": Summary,
    "Timeseries": Timeseries,
    "Events": Events,
    "Concepts": Concepts,
}
