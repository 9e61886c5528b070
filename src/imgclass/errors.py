"""Typed errors that cross layers; the API maps each to an HTTP status and error code.

``vision`` and ``warehouse`` raise these without knowing about HTTP: the status
is data on the exception, and ``api.errors`` shapes the JSON body.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base: an error with a stable machine-readable code and an HTTP status."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class ImageRejected(ServiceError):
    """The upload is not an image we can classify (the client's fault)."""

    status = 422
    code = "corrupt_image"


class UnsupportedImage(ImageRejected):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class ModelUnavailable(ServiceError):
    status = 503
    code = "model_unavailable"


class StorageUnavailable(ServiceError):
    """The warehouse could not record the request, so it is not acknowledged."""

    status = 503
    code = "storage_unavailable"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The request is well-formed but the state of the resource does not allow it."""

    status = 409
    code = "conflict"
