"""Ground truth: a caller confirms or corrects the prediction of one image of a request.

``FeedbackService.submit`` finds the request's events, picks the image (by
filename or position when the request had several), resolves the true class
(an ImageNet index, a name, a class label as the analytics use it, or a WordNet
id), stores it in the warehouse (replacing earlier feedback for that image) and
counts it in ``imgclass_feedback_total{outcome, replaced}`` (traffic; the accuracy
gauges come from the warehouse, see ops/accuracy.py). Plain Python: the API parses
the JSON, this module decides.

Only the caller's own events are read: an admin's feedback may name any event, a keyed
user's only that user's events, an anonymous caller's only anonymous events. A request id
is no secret (clients may choose it with ``X-Request-ID``, so strangers' requests can share
one); anybody else's events under it are treated as absent, so no answer or message
describes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine

from imgclass.errors import BadRequest, Conflict, NotFound, ServiceError
from imgclass.ops import metrics
from imgclass.vision.labels import imagenet_labels
from imgclass.warehouse.concepts import imagenet_concepts, normalize_name
from imgclass.warehouse.feedback import EventRef, FeedbackStore, request_events
from imgclass.warehouse.recorder import ClassFacts

WNID = re.compile(r"^n\d{8}$")
SHOWN = 10  # how many choices an error message lists


class UnknownClass(ServiceError):
    status = 422
    code = "unknown_class"


@dataclass(frozen=True)
class FeedbackRequest:
    request_id: str
    class_id: int | None = None  # exactly one of class_id and label
    label: str | None = None  # ImageNet name ("tabby", "tabby, tabby cat") or WordNet id
    filename: str | None = None  # at most one of filename and index
    index: int | None = None  # position in the predict response's results, from 0


@dataclass(frozen=True)
class FeedbackOutcome:
    request_id: str
    index: int
    filename: str
    model_name: str
    model_version: str
    predicted: ClassFacts
    true_class: ClassFacts
    is_correct: bool
    replaced: bool


def _class(class_id: int) -> ClassFacts:
    labels = imagenet_labels()
    return ClassFacts(class_id, labels.names[class_id], labels.wnids[class_id])


def _wnid(class_id: int) -> str | None:
    wnids = imagenet_labels().wnids
    return wnids[class_id] if 0 <= class_id < len(wnids) else None


@lru_cache(maxsize=1)
def _label_index() -> tuple[
    dict[str, list[int]], dict[str, int], dict[str, list[int]], dict[str, int]
]:
    """(exact full name → ids, analytics label → id, lower-cased name or synonym → ids,
    WordNet id → id)."""
    labels = imagenet_labels()
    exact: dict[str, list[int]] = {}
    loose: dict[str, list[int]] = {}
    for class_id, name in enumerate(labels.names):
        exact.setdefault(name, []).append(class_id)
        terms = {name.lower(), *(part.strip().lower() for part in name.split(","))}
        for term in terms:
            loose.setdefault(term, []).append(class_id)
    # The unique, comma-free labels of the analytics class filter ("Egyptian_cat",
    # "crane_134"), so a label read off the dashboard or a cube names its class here too.
    short = {label: class_id for class_id, label in imagenet_concepts().labels.items()}
    return exact, short, loose, {wnid: i for i, wnid in enumerate(labels.wnids)}


def resolve_class(*, class_id: int | None = None, label: str | None = None) -> ClassFacts:
    """The ImageNet class named by an index, a label or a WordNet id (422 when unknown)."""
    n_classes = len(imagenet_labels())
    if class_id is not None:
        if not 0 <= class_id < n_classes:
            raise UnknownClass(f"class_id must be an ImageNet index from 0 to {n_classes - 1}")
        return _class(class_id)
    assert label is not None
    exact, short, loose, wnids = _label_index()
    text = " ".join(label.split())
    if WNID.match(text):
        if text not in wnids:
            raise UnknownClass(f"label {text!r} is not the WordNet id of an ImageNet class")
        return _class(wnids[text])
    if text not in exact and normalize_name(text) in short:
        return _class(short[normalize_name(text)])
    ids = exact.get(text) or loose.get(text.lower(), [])
    if not ids:
        raise UnknownClass(
            f"label {label[:80]!r} is not an ImageNet class name; send an ImageNet name "
            "(e.g. 'tabby'), a class label as the analytics write it (e.g. 'Egyptian_cat'), "
            "a WordNet id (e.g. 'n02123045') or a class_id"
        )
    if len(ids) > 1:
        choices = ", ".join(f"{i} {imagenet_labels().names[i]!r}" for i in ids)
        raise UnknownClass(
            f"label {text!r} names several ImageNet classes ({choices}); send class_id instead"
        )
    return _class(ids[0])


def _pick(request_id: str, events: list[EventRef], req: FeedbackRequest) -> tuple[int, EventRef]:
    """The one event the feedback is about, and its position in the response."""
    names = [e.filename for e in events]
    listed = ", ".join(repr(n) for n in names[:SHOWN]) + (", …" if len(names) > SHOWN else "")
    if req.index is not None:
        if not 0 <= req.index < len(events):
            raise BadRequest(
                f"index {req.index} is out of range: request {request_id} classified "
                f"{len(events)} image(s), index 0 to {len(events) - 1}",
                code="invalid_parameter",
            )
        return req.index, events[req.index]
    if req.filename is not None:
        matches = [i for i, name in enumerate(names) if name == req.filename]
        if not matches:
            raise BadRequest(
                f"filename {req.filename[:80]!r} is not in request {request_id} "
                f"(its images: {listed})",
                code="invalid_parameter",
            )
        if len(matches) > 1:
            raise BadRequest(
                f"filename {req.filename!r} appears {len(matches)} times in request "
                f"{request_id}; send index (positions {', '.join(map(str, matches[:SHOWN]))})",
                code="invalid_parameter",
            )
        return matches[0], events[matches[0]]
    if len(events) > 1:
        raise BadRequest(
            f"request {request_id} classified {len(events)} images ({listed}); add 'filename' "
            f"or 'index' (0 to {len(events) - 1}) to say which one the feedback is about",
            code="ambiguous_request",
        )
    return 0, events[0]


class FeedbackService:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.store = FeedbackStore(engine)

    def submit(
        self, req: FeedbackRequest, user_id: int, *, is_admin: bool = False
    ) -> FeedbackOutcome:
        """Store the feedback of ``user_id`` (0: anonymous); an admin may name any event."""
        true_class = resolve_class(class_id=req.class_id, label=req.label)
        events = request_events(self.engine, req.request_id, owner=None if is_admin else user_id)
        if not events:
            # The same answer whether the id is unknown or another caller's: nothing leaks.
            raise NotFound(
                f"no request with id {req.request_id!r} was recorded for you (use the "
                "request_id of a predict response you sent, with the same API key, or "
                "without one for an anonymous request)",
                code="unknown_request",
            )
        answered = [e for e in events if e.succeeded]
        if not answered:
            failed = events[0]
            raise Conflict(
                f"request {req.request_id} failed ({failed.status_code} "
                f"{failed.error_code}): it has no prediction to confirm or correct",
                code="no_prediction",
            )
        index, event = _pick(req.request_id, answered, req)
        stored = self.store.record(event, true_class, user_id)
        metrics.feedback_received(stored.is_correct, stored.replaced)
        assert event.class_id is not None
        return FeedbackOutcome(
            request_id=req.request_id,
            index=index,
            filename=event.filename,
            model_name=event.model_name or "",
            model_version=event.model_version or "",
            predicted=ClassFacts(event.class_id, event.class_name or "", _wnid(event.class_id)),
            true_class=true_class,
            is_correct=stored.is_correct,
            replaced=stored.replaced,
        )
