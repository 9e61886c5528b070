"""The Lambda entry point, invoked with API Gateway HTTP API (payload 2.0) events as AWS sends."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass

import pytest

from imgclass.app import create_app, services
from imgclass.lambda_handler import make_handler
from tests.conftest import CAT_CLASSES, fact_rows

SOURCE_IP = "198.51.100.23"
API_HOST = "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"


@dataclass
class LambdaContext:
    """The attributes of the context object the Python runtime passes."""

    aws_request_id: str = "6f0c5a8e-3c1d-4c4e-9a53-0a1f2b3c4d5e"
    function_name: str = "imgclass"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:imgclass"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def multipart(field: str, filename: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = "------------------------" + uuid.uuid4().hex[:16]
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def http_api_event(
    path: str, body: bytes, content_type: str, query: str = "", method: str = "POST"
) -> dict:
    """An API Gateway HTTP API event (payload format 2.0) with a binary body."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "accept": "*/*",
            "content-length": str(len(body)),
            "content-type": content_type,
            "host": API_HOST,
            "user-agent": "curl/8.5.0",
            "x-amzn-trace-id": "Root=1-6744a0b2-0f1e2d3c4b5a697887766554",
            "x-forwarded-for": SOURCE_IP,
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "queryStringParameters": dict(p.split("=", 1) for p in query.split("&") if p) or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": API_HOST,
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": "curl/8.5.0",
            },
            "requestId": "CjXk9gFuDoEEMqw=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:06:50:00 +0000",
            "timeEpoch": 1795589400000,
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


@pytest.fixture
def handler(settings):
    handle = make_handler(settings)
    yield handle


@pytest.fixture
def warehouse(settings):
    """The same warehouse the handler writes to, opened by a second app for reading."""
    app = create_app(settings.model_copy(update={"bootstrap_admin": False}))
    yield app
    services(app).engine.dispose()


def test_a_photo_through_api_gateway_gets_its_class_and_a_fact_row(handler, warehouse, cat_jpeg):
    body, content_type = multipart("image", "chelsea.jpg", cat_jpeg, "image/jpeg")
    event = http_api_event("/api/v1/predict", body, content_type, query="top_k=3")
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    assert response["headers"]["content-type"] == "application/json"
    assert response["isBase64Encoded"] is False
    result = json.loads(response["body"])
    (image,) = result["results"]
    assert image["filename"] == "chelsea.jpg" and len(image["predictions"]) == 3
    assert image["predictions"][0]["class_id"] in CAT_CLASSES
    assert response["headers"]["x-request-id"] == result["request_id"]
    (row,) = fact_rows(warehouse)
    assert row["request_id"] == result["request_id"] and row["status_code"] == 200
    assert (row["ip_address"], row["user_agent"]) == (SOURCE_IP, "curl/8.5.0")


def test_a_bad_upload_gets_the_same_error_as_from_the_app(handler, warehouse, settings):
    text = b"this is not an image, just some text\n" * 10
    body, content_type = multipart("image", "notes.txt", text, "text/plain")
    response = handler(http_api_event("/api/v1/predict", body, content_type), LambdaContext())
    assert response["statusCode"] == 415
    error = json.loads(response["body"])["error"]
    assert error["code"] == "unsupported_media_type"

    app = create_app(settings)  # the same request straight to the app
    direct = app.test_client().post("/api/v1/predict", data=body, content_type=content_type)
    services(app).engine.dispose()
    assert direct.status_code == 415
    same = direct.get_json()["error"]
    assert (same["code"], same["message"]) == (error["code"], error["message"])
    assert [r["status_code"] for r in fact_rows(warehouse)] == [415, 415]


def test_the_upload_limit_holds_behind_api_gateway(settings, cat_jpeg):
    handler = make_handler(settings.model_copy(update={"max_upload_bytes": 10_000}))
    body, content_type = multipart("image", "chelsea.jpg", cat_jpeg, "image/jpeg")
    response = handler(http_api_event("/api/v1/predict", body, content_type), LambdaContext())
    assert response["statusCode"] == 413
    assert json.loads(response["body"])["error"]["code"] == "payload_too_large"


def test_health_endpoints_answer(handler):
    event = http_api_event("/readyz", b"", "text/plain", method="GET")
    event.pop("body")
    event["isBase64Encoded"] = False
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "ready"


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"version": "2.0", "rawPath": "/api/v1/predict"},
        {"version": "9.9"},
        {**http_api_event("/api/v1/predict", b"x", "image/jpeg"), "body": "%%% not base64 %%%"},
    ],
    ids=["empty", "truncated", "unknown-version", "bad-base64"],
)
def test_an_event_that_is_not_http_gets_a_json_400(handler, event):
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["code"] == "bad_event" and error["request_id"]


def test_one_request_at_a_time_means_one_worker_with_every_cpu(handler):
    from imgclass.config import available_cpus

    session = services(handler.app).predictor.models.primary._session
    assert session.get_session_options().intra_op_num_threads == available_cpus()
