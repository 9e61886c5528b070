"""POST /api/v1/feedback: ground truth joined to the real predicted events, and hostile bodies."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select, text

from imgclass.app import create_app, services
from imgclass.ops.metrics import REGISTRY
from imgclass.warehouse.feedback import accuracy
from imgclass.warehouse.schema import api_event_fact, class_dim, prediction_feedback
from tests.conftest import CAT_CLASSES, ESPRESSO

TABBY, TABBY_WNID = 281, "n02123045"


def predict(client, files, **headers):
    data = {"image": [(io.BytesIO(content), name) for name, content in files]}
    resp = client.post(
        "/api/v1/predict?top_k=1", data=data, content_type="multipart/form-data", headers=headers
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def feedback(client, body, **headers):
    return client.post("/api/v1/feedback", json=body, headers=headers)


def feedback_rows(app) -> list[dict]:
    query = text(
        """
        SELECT fb.event_id, c.class_id AS true_class_id, c.wnid, fb.is_correct, fb.user_id,
               f.request_id
        FROM prediction_feedback fb
        JOIN class_dim c ON c.class_key = fb.true_class_key
        JOIN api_event_fact f ON f.event_id = fb.event_id
        ORDER BY fb.event_id
        """
    )
    with services(app).engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def counted(outcome: str, replaced: str = "false") -> float:
    labels = {"outcome": outcome, "replaced": replaced}
    return REGISTRY.get_sample_value("imgclass_feedback_total", labels) or 0.0


def error(resp) -> tuple[int, str, str]:
    body = resp.get_json()["error"]
    return resp.status_code, body["code"], body["message"]


@pytest.fixture
def cat_request(client, cat_jpeg) -> dict:
    body = predict(client, [("chelsea.jpg", cat_jpeg)])
    assert body["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES
    return body


def test_confirming_a_prediction(app, client, cat_request):
    predicted = cat_request["results"][0]["predictions"][0]
    correct_before = counted("correct")
    resp = feedback(
        client, {"request_id": cat_request["request_id"], "class_id": predicted["class_id"]}
    )
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["is_correct"] is True and body["replaced"] is False
    assert body["predicted"]["class_id"] == body["true_class"]["class_id"] == predicted["class_id"]
    assert body["predicted"]["label"] == predicted["label"]
    assert (body["index"], body["filename"]) == (0, "chelsea.jpg")
    assert body["model"]["name"] == "efficientnet-lite0"
    (row,) = feedback_rows(app)
    assert row["request_id"] == cat_request["request_id"]
    assert (row["true_class_id"], row["is_correct"], row["user_id"]) == (
        predicted["class_id"],
        True,
        0,
    )
    assert counted("correct") == correct_before + 1


def test_correcting_then_replacing(app, client, cat_request):
    rid = cat_request["request_id"]
    incorrect_before = counted("incorrect")
    resp = feedback(client, {"request_id": rid, "label": "espresso"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["is_correct"] is False
    assert body["true_class"] == {"class_id": ESPRESSO, "label": "espresso", "wnid": "n07920052"}
    assert counted("incorrect") == incorrect_before + 1

    # A second feedback for the same image replaces the first: still one row.
    predicted = cat_request["results"][0]["predictions"][0]["class_id"]
    outcome = "correct" if predicted == TABBY else "incorrect"
    replaced_before = counted(outcome, replaced="true")
    resp = feedback(client, {"request_id": rid, "label": TABBY_WNID})
    assert resp.status_code == 200 and resp.get_json()["replaced"] is True
    (row,) = feedback_rows(app)
    assert (row["true_class_id"], row["wnid"]) == (TABBY, TABBY_WNID)
    assert bool(row["is_correct"]) is (predicted == TABBY)
    assert counted(outcome, replaced="true") == replaced_before + 1  # counted as a replacement


def test_a_true_class_never_predicted_is_added_to_the_class_dimension(app, client, cat_request):
    with services(app).engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(class_dim)).scalar_one()
    resp = feedback(client, {"request_id": cat_request["request_id"], "label": "goldfish"})
    assert resp.status_code == 201
    with services(app).engine.connect() as conn:
        row = conn.execute(select(class_dim).where(class_dim.c.class_id == 1)).one()
        after = conn.execute(select(func.count()).select_from(class_dim)).scalar_one()
    assert (row.class_name, row.wnid, after) == (
        "goldfish, Carassius auratus",
        "n01443537",
        before + 1,
    )


def test_unknown_request_is_404(client):
    resp = feedback(client, {"request_id": "0123456789abcdef", "class_id": 1})
    status, code, message = error(resp)
    assert (status, code) == (404, "unknown_request") and "0123456789abcdef" in message


def test_a_failed_request_has_nothing_to_correct(app, client):
    resp = client.post(
        "/api/v1/predict",
        data={"image": (io.BytesIO(b"hello, not an image"), "note.txt")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 415
    rid = resp.get_json()["error"]["request_id"]
    status, code, message = error(feedback(client, {"request_id": rid, "class_id": 1}))
    assert (status, code) == (409, "no_prediction")
    assert "415" in message and "no prediction" in message
    assert feedback_rows(app) == []


def test_several_images_need_a_choice(app, client, cat_jpeg, coffee_jpeg):
    body = predict(client, [("a.jpg", coffee_jpeg), ("b.jpg", cat_jpeg), ("c.jpg", coffee_jpeg)])
    rid = body["request_id"]
    status, code, message = error(feedback(client, {"request_id": rid, "class_id": TABBY}))
    assert (status, code) == (400, "ambiguous_request")
    assert "3 images" in message and "'b.jpg'" in message and "index" in message

    resp = feedback(client, {"request_id": rid, "class_id": TABBY, "filename": "b.jpg"})
    assert resp.status_code == 201 and resp.get_json()["index"] == 1
    assert resp.get_json()["predicted"]["class_id"] in CAT_CLASSES
    resp = feedback(client, {"request_id": rid, "class_id": ESPRESSO, "index": 2})
    assert resp.status_code == 201
    assert resp.get_json()["filename"] == "c.jpg" and resp.get_json()["is_correct"] is True

    rows = feedback_rows(app)
    assert len(rows) == 2 and rows[0]["event_id"] < rows[1]["event_id"]
    assert [r["true_class_id"] for r in rows] == [TABBY, ESPRESSO]

    for bad, word in (({"filename": "d.jpg"}, "d.jpg"), ({"index": 3}, "index 3")):
        status, code, message = error(feedback(client, {"request_id": rid, "class_id": 1, **bad}))
        assert (status, code) == (400, "invalid_parameter") and word in message


def test_a_repeated_filename_must_be_picked_by_index(client, cat_jpeg, coffee_jpeg):
    body = predict(client, [("same.jpg", coffee_jpeg), ("same.jpg", cat_jpeg)])
    rid = body["request_id"]
    resp = feedback(client, {"request_id": rid, "class_id": 1, "filename": "same.jpg"})
    status, _, message = error(resp)
    assert status == 400 and "2 times" in message and "index" in message
    resp = feedback(client, {"request_id": rid, "class_id": TABBY, "index": 1})
    assert resp.status_code == 201 and resp.get_json()["predicted"]["class_id"] in CAT_CLASSES


@pytest.mark.parametrize(
    ("label", "class_id"),
    [
        ("tabby", TABBY),
        ("tabby, tabby cat", TABBY),
        ("  Tabby   Cat ", TABBY),
        (TABBY_WNID, TABBY),
        ("Cardigan, Cardigan Welsh corgi", 264),
        # The labels of the analytics class filter (class_dim.label) name their class too.
        ("Egyptian_cat", 285),
        ("Persian_cat", 283),
        ("crane_134", 134),
    ],
)
def test_label_forms(client, cat_request, label, class_id):
    resp = feedback(client, {"request_id": cat_request["request_id"], "label": label})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["true_class"]["class_id"] == class_id


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"label": "crane"}, 422, "unknown_class", ["134", "517", "class_id"]),
        ({"label": "unicorn"}, 422, "unknown_class", ["label", "unicorn"]),
        ({"label": "n99999999"}, 422, "unknown_class", ["WordNet"]),
        ({"class_id": 1000}, 422, "unknown_class", ["class_id", "999"]),
        ({"class_id": -1}, 422, "unknown_class", ["class_id"]),
        ({"class_id": 10**40}, 422, "unknown_class", ["class_id"]),
        ({"class_id": "281"}, 400, "invalid_parameter", ["class_id", "integer"]),
        ({"class_id": 281.5}, 400, "invalid_parameter", ["class_id"]),  # 281.0 is 281 (JSON)
        ({"class_id": True}, 400, "invalid_parameter", ["class_id"]),
        ({"class_id": 281, "label": "tabby"}, 400, "invalid_parameter", ["exactly one"]),
        ({}, 400, "invalid_parameter", ["exactly one"]),
        ({"label": ""}, 400, "invalid_parameter", ["label"]),
        ({"label": ["tabby"]}, 400, "invalid_parameter", ["label"]),
        ({"label": "x" * 201}, 400, "invalid_parameter", ["label", "200"]),
        ({"label": "tabby'; DROP TABLE class_dim; --"}, 422, "unknown_class", ["label"]),
        ({"class_id": 1, "index": -1}, 400, "invalid_parameter", ["index"]),
        ({"class_id": 1, "index": "0"}, 400, "invalid_parameter", ["index"]),
        ({"class_id": 1, "filename": 7}, 400, "invalid_parameter", ["filename"]),
        ({"class_id": 1, "filename": "a", "index": 0}, 400, "invalid_parameter", ["at most one"]),
        ({"class_id": 1, "class": 2}, 400, "invalid_parameter", ["'class'", "accepted"]),
    ],
)
def test_invalid_fields_are_named(app, client, cat_request, body, status, code, words):
    resp = feedback(client, {"request_id": cat_request["request_id"], **body})
    got_status, got_code, message = error(resp)
    assert (got_status, got_code) == (status, code), message
    for word in words:
        assert word in message
    assert feedback_rows(app) == []


@pytest.mark.parametrize(
    "request_id",
    [None, 42, "", "x" * 65, "' OR '1'='1", "abc; DELETE FROM api_event_fact", "ü" * 10],
)
def test_hostile_request_ids_are_refused(app, client, cat_request, request_id):
    resp = feedback(client, {"request_id": request_id, "class_id": 1})
    status, code, message = error(resp)
    assert (status, code) == (400, "invalid_parameter") and "request_id" in message
    with services(app).engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(api_event_fact)).scalar_one() == 1


def test_a_missing_and_a_malformed_request_id_are_told_apart(client):
    _, code, message = error(feedback(client, {"class_id": 1}))
    assert code == "invalid_parameter" and "request_id is required" in message
    _, code, message = error(feedback(client, {"request_id": "not-a-uuid!!", "class_id": 1}))
    assert code == "invalid_parameter" and "'not-a-uuid!!' is malformed" in message
    assert "required" not in message


SHARED_ID = "chosen-by-clients-1"


def test_feedback_reads_and_names_only_the_callers_own_events(app, client, admin_key, cat_jpeg):
    """A request id is the client's choice (X-Request-ID): strangers can send the same one.

    Feedback used to take every event under the id, so an anonymous caller saw the others'
    filenames ("classified 3 images ('cat.jpg', 'alice-passport.png', …)") and could
    correct their predictions.
    """
    users = services(app).users
    _, alice = users.add("alice")
    _, bob = users.add("bob")
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    as_admin = {"Authorization": f"Bearer {admin_key}"}
    for name, auth in (("cat.jpg", {}), ("alice-passport.png", as_alice), ("bob.png", as_bob)):
        predict(client, [(name, cat_jpeg)], **{"X-Request-ID": SHARED_ID, **auth})
    predict(client, [("alice-only.png", cat_jpeg)], **{"X-Request-ID": "alice-only-1", **as_alice})

    # Each caller finds exactly their own image under the shared id.
    for auth, name in (({}, "cat.jpg"), (as_alice, "alice-passport.png"), (as_bob, "bob.png")):
        resp = feedback(client, {"request_id": SHARED_ID, "class_id": TABBY}, **auth)
        assert resp.status_code == 201, resp.get_json()
        assert resp.get_json()["filename"] == name
        assert resp.get_json()["index"] == 0

    # Another caller's request is "not found", word for word as an id nobody used.
    unknown = error(feedback(client, {"request_id": "nobody-used-it", "class_id": TABBY}))
    for auth in ({}, as_bob):
        resp = feedback(client, {"request_id": "alice-only-1", "class_id": TABBY}, **auth)
        status, code, message = error(resp)
        assert (status, code) == unknown[:2] == (404, "unknown_request")
        assert message == unknown[2].replace("nobody-used-it", "alice-only-1")
        assert "alice" not in message.replace("alice-only-1", "")

    # An admin may give feedback on any event, and so is told about all of them.
    status, code, message = error(
        feedback(client, {"request_id": SHARED_ID, "class_id": TABBY}, **as_admin)
    )
    assert (status, code) == (400, "ambiguous_request") and "3 images" in message
    assert "'alice-passport.png'" in message
    resp = feedback(client, {"request_id": "alice-only-1", "class_id": 285}, **as_admin)
    assert resp.status_code == 201 and resp.get_json()["filename"] == "alice-only.png"

    with services(app).engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.image_filename, fb.user_id FROM prediction_feedback fb "
                "JOIN api_event_fact f USING (event_id) JOIN image_dim i USING (image_key) "
                "ORDER BY fb.feedback_id"
            )
        ).all()
    ids = {a.username: a.user_id for a in users.list()}
    assert [tuple(r) for r in rows] == [
        ("cat.jpg", 0),
        ("alice-passport.png", ids["alice"]),
        ("bob.png", ids["bob"]),
        ("alice-only.png", ids["admin"]),
    ]


def test_hostile_bodies(app, client, cat_request):
    rid = cat_request["request_id"]
    post = client.post
    huge = f'{{"request_id": "{rid}", "class_id": 1, "filename": "{"x" * 10_000}"}}'
    cases = [
        (post("/api/v1/feedback", data=huge, content_type="application/json"), 413),
        (
            post("/api/v1/feedback", data="[" * 2000 + "]" * 2000, content_type="application/json"),
            400,
        ),
        (post("/api/v1/feedback", data='{"request_id": ', content_type="application/json"), 400),
        (
            post("/api/v1/feedback", data=b"\xff\xfe\x00garbage", content_type="application/json"),
            400,
        ),
        (post("/api/v1/feedback", data="[1, 2]", content_type="application/json"), 400),
        (post("/api/v1/feedback", data="null", content_type="application/json"), 400),
        (post("/api/v1/feedback", data=f"request_id={rid}&class_id=1"), 415),
        (post("/api/v1/feedback", data=b"", content_type="application/json"), 400),
    ]
    for resp, status in cases:
        assert resp.status_code == status, resp.get_json()
        assert resp.get_json()["error"]["message"]
    assert feedback_rows(app) == []
    # A body at the limit but well-formed still works.
    resp = feedback(client, {"request_id": rid, "class_id": TABBY, "filename": "chelsea.jpg"})
    assert resp.status_code == 201


def test_feedback_follows_the_predict_auth_rules(settings, cat_jpeg):
    app = create_app(settings.model_copy(update={"require_auth": True}))
    client = app.test_client()
    _, key = services(app).users.add("dana")
    auth = {"Authorization": f"Bearer {key}"}
    rid = predict(client, [("cat.jpg", cat_jpeg)], **auth)["request_id"]
    status, code, _ = error(feedback(client, {"request_id": rid, "class_id": TABBY}))
    assert (status, code) == (401, "unauthorized")
    assert feedback(client, {"request_id": rid, "class_id": TABBY}, **auth).status_code == 201
    dana = next(a for a in services(app).users.list() if a.username == "dana")
    assert [r["user_id"] for r in feedback_rows(app)] == [dana.user_id]
    bad = feedback(client, {"request_id": rid, "class_id": 1}, Authorization="Bearer imgc_no")
    assert bad.status_code == 401
    services(app).engine.dispose()


def test_accuracy_overall_per_class_model_and_day(app, client, cat_jpeg, coffee_jpeg):
    files = [("cat1.jpg", cat_jpeg), ("cup1.jpg", coffee_jpeg), ("cup2.jpg", coffee_jpeg)]
    body = predict(client, files)
    rid = body["request_id"]
    cat_pred = body["results"][0]["predictions"][0]["class_id"]
    assert feedback(client, {"request_id": rid, "index": 0, "class_id": TABBY}).status_code == 201
    assert feedback(client, {"request_id": rid, "index": 1, "label": "espresso"}).status_code == 201
    assert feedback(client, {"request_id": rid, "index": 2, "label": "cup"}).status_code == 201
    engine = services(app).engine

    cat_right = int(cat_pred == TABBY)
    (overall,) = accuracy(engine)
    assert (overall.feedback, overall.correct) == (3, 1 + cat_right)
    by_true = {r.key: (r.feedback, r.correct) for r in accuracy(engine, "true_class")}
    assert by_true == {TABBY: (1, cat_right), 968: (1, 0), ESPRESSO: (1, 1)}
    by_pred = {r.key: (r.feedback, r.correct) for r in accuracy(engine, "predicted_class")}
    assert by_pred[ESPRESSO] == (2, 1)
    (model,) = accuracy(engine, "model")
    assert model.label.startswith("efficientnet-lite0 0.1.0") and model.feedback == 3
    (day,) = accuracy(engine, "day")
    assert day.feedback == 3 and day.accuracy == pytest.approx((1 + cat_right) / 3)
    with pytest.raises(ValueError, match="choose one of"):
        accuracy(engine, "weekday")  # type: ignore[arg-type]
    with services(app).engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(prediction_feedback)).scalar_one() == 3
