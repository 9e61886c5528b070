"""Privacy: stored addresses per IMGCLASS_IP_STORAGE, `users forget`, and `db prune`."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from imgclass.app import create_app, services
from imgclass.cli import main
from imgclass.ops.privacy import hash_ip, truncate_ip
from imgclass.warehouse.recorder import Requester
from imgclass.warehouse.users import UserStore
from tests.api.test_predict import post_files
from tests.conftest import fact_rows


def test_truncation_keeps_the_network_only():
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert truncate_ip("not an address") == "unknown"


def test_an_ipv4_mapped_address_is_truncated_as_ipv4():
    # What a dual-stack listener reports for an IPv4 client; its /48 was "::" for all of them.
    assert truncate_ip("::ffff:203.0.113.77") == "203.0.113.0"
    assert truncate_ip("::ffff:127.0.0.1") == "127.0.0.0"
    assert truncate_ip("2001:DB8:ABCD:1234:0:0:0:1") == "2001:db8:abcd::"


def test_one_address_has_one_hash_however_it_is_written():
    key = b"k1"
    assert hash_ip("2001:DB8:ABCD:1234:0:0:0:1", key) == hash_ip("2001:db8:abcd:1234::1", key)
    assert hash_ip("::ffff:203.0.113.77", key) == hash_ip("203.0.113.77", key)
    assert hash_ip("2001:db8:abcd:1234::1", key) != hash_ip("2001:db8:abcd:1234::2", key)


def test_keyed_hash_is_stable_and_key_dependent():
    assert hash_ip("203.0.113.77", b"k1") == hash_ip("203.0.113.77", b"k1")
    assert hash_ip("203.0.113.77", b"k1") != hash_ip("203.0.113.77", b"k2")
    assert hash_ip("203.0.113.77", b"k1") != hash_ip("203.0.113.78", b"k1")


def stored_ips(settings, cat_jpeg, ip, **overrides) -> list[str]:
    app = create_app(settings.model_copy(update=overrides))
    post_files(app.test_client(), [("a.jpg", cat_jpeg)], environ_base={"REMOTE_ADDR": ip})
    ips = [row["ip_address"] for row in fact_rows(app)]
    services(app).engine.dispose()
    return ips


def test_the_warehouse_stores_what_the_policy_says(settings, cat_jpeg):
    assert stored_ips(settings, cat_jpeg, "203.0.113.77", ip_storage="truncated") == ["203.0.113.0"]
    hashed = stored_ips(settings, cat_jpeg, "203.0.113.77", ip_storage="hashed")[-1]
    assert hashed.startswith("h:") and "203.0.113" not in hashed
    # The generated key is kept (0600), so the same client hashes the same after a restart.
    key_file = settings.ip_hash_key_path
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = stored_ips(settings, cat_jpeg, "203.0.113.77", ip_storage="hashed")[-1]
    assert again == hashed


@pytest.fixture
def usual_umask():
    previous = os.umask(0o022)  # the common default: new files 0644, directories 0755
    yield
    os.umask(previous)


def test_the_data_dir_and_database_files_are_owner_only(usual_umask, settings, cat_jpeg):
    # The database holds addresses, user agents, filenames and key hashes; it was created
    # 0644 (with its -wal and -shm) next to the 0600 admin-token and ip-hash-key.
    assert not settings.data_dir.exists()
    app = create_app(settings.model_copy(update={"ip_storage": "hashed"}))
    assert post_files(app.test_client(), [("a.jpg", cat_jpeg)]).status_code == 200
    data = settings.data_dir
    db_files = [data / f"imgclass.db{suffix}" for suffix in ("", "-wal", "-shm")]
    assert all(path.exists() for path in db_files)  # WAL mode, a connection still open
    modes = {
        path.name: path.stat().st_mode & 0o777
        for path in (*db_files, data / "admin-token", data / "ip-hash-key")
    }
    assert modes == dict.fromkeys(modes, 0o600)
    assert data.stat().st_mode & 0o777 == 0o700
    services(app).engine.dispose()


DISTINCT_USERS = (
    "SELECT COUNT(DISTINCT u.user_id) FROM api_event_fact f JOIN user_dim u USING (user_key)"
)


def count(app, sql: str) -> int:
    with services(app).engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_forget_keeps_the_counts_and_erases_the_person(app, settings, cat_jpeg, coffee_jpeg):
    client = app.test_client()
    store = UserStore(services(app).engine)
    _alice, alice_key = store.add("alice")
    _bob, bob_key = store.add("bob")
    for key, ip, agent in (
        (alice_key, "198.51.100.1", "alice-phone"),
        (alice_key, "198.51.100.2", "alice-laptop"),
        (alice_key, "198.51.100.2", "alice-laptop"),
        (bob_key, "198.51.100.9", "bob-agent"),
    ):
        post_files(
            client,
            [("a.jpg", cat_jpeg)],
            headers={"Authorization": f"Bearer {key}", "User-Agent": agent},
            environ_base={"REMOTE_ADDR": ip},
        )
    total = count(app, "SELECT COUNT(*) FROM api_event_fact")
    users_before = count(app, DISTINCT_USERS)

    result = CliRunner().invoke(
        main,
        ["users", "forget", "alice", "--yes"],
        env={"IMGCLASS_DATA_DIR": str(settings.data_dir)},
    )
    assert result.exit_code == 0, result.output
    assert "3 events kept" in result.output

    rows = fact_rows(app)
    assert len(rows) == total == 4
    assert count(app, DISTINCT_USERS) == users_before
    forgotten = [r for r in rows if r["username"].startswith("forgotten-")]
    assert len(forgotten) == 3
    assert {(r["ip_address"], r["user_agent"]) for r in forgotten} == {("", "")}
    everything = str(rows) + str(
        services(app).engine.connect().execute(text("SELECT * FROM user_dim")).fetchall()
    )
    assert "alice" not in everything and "198.51.100.1" not in everything
    assert any(r["username"] == "bob" for r in rows)
    # Her key no longer works; bob's does, and his new events record normally.
    assert (
        post_files(client, [("a.jpg", cat_jpeg)], headers={"Authorization": f"Bearer {alice_key}"})
    ).status_code == 401
    ok = post_files(
        client, [("b.jpg", coffee_jpeg)], headers={"Authorization": f"Bearer {bob_key}"}
    )
    assert ok.status_code == 200


def test_forget_blanks_the_filenames_only_the_user_used(app, settings, cat_jpeg, coffee_jpeg):
    client = app.test_client()
    store = UserStore(services(app).engine)
    _alice, alice = store.add("alice")
    _bob, bob = store.add("bob")
    for key, files in (
        # Two names for one content: both rows blanked, so the second merges into the first.
        (alice, [("alice-passport.png", cat_jpeg), ("alice-id.png", cat_jpeg)]),
        (alice, [("shared.jpg", coffee_jpeg)]),
        (bob, [("shared.jpg", coffee_jpeg)]),  # the same row as alice's: bob's name stays
    ):
        post_files(client, files, headers={"Authorization": f"Bearer {key}"})
    measures = (
        "SELECT COUNT(*), COUNT(DISTINCT i.image_id), COUNT(DISTINCT f.class_key) "
        "FROM api_event_fact f JOIN image_dim i USING (image_key)"
    )
    with services(app).engine.connect() as conn:
        before = tuple(conn.execute(text(measures)).one())

    env = {"IMGCLASS_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["users", "forget", "alice", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "2 filenames blanked" in result.output

    with services(app).engine.connect() as conn:
        assert tuple(conn.execute(text(measures)).one()) == before
        names = (
            conn.execute(text("SELECT image_filename FROM image_dim WHERE image_key != 0"))
            .scalars()
            .all()
        )
    assert sorted(names) == ["", "shared.jpg"]
    rows = fact_rows(app)  # inner joins: every fact still has its image row
    assert [r["image_filename"] for r in rows] == ["", "", "shared.jpg", "shared.jpg"]
    assert "alice" not in str(rows)


def test_forgetting_the_last_admin_needs_force(app, settings, admin_key):
    # It used to succeed silently: no admin key left, and a dead one in admin-token.
    env = {"IMGCLASS_DATA_DIR": str(settings.data_dir)}
    refused = CliRunner().invoke(main, ["users", "forget", "admin", "--yes"], env=env)
    assert refused.exit_code == 1 and "last active admin" in refused.output
    assert "--force" in refused.output
    admin = {"Authorization": f"Bearer {admin_key}"}
    assert app.test_client().get("/api/v1/analytics/summary", headers=admin).status_code == 200

    forced = CliRunner().invoke(main, ["users", "forget", "admin", "--yes", "--force"], env=env)
    assert forced.exit_code == 0, forced.output
    assert "no active admin now" in forced.output and "next `imgclass serve`" in forced.output
    assert not settings.admin_token_path.exists()  # it held the revoked key
    assert app.test_client().get("/api/v1/analytics/summary", headers=admin).status_code == 401
    # The next start creates an admin whose key is in admin-token again.
    restarted = create_app(settings)
    new_key = settings.admin_token_path.read_text().strip()
    assert new_key != admin_key
    new = {"Authorization": f"Bearer {new_key}"}
    assert restarted.test_client().get("/api/v1/analytics/summary", headers=new).status_code == 200
    services(restarted).engine.dispose()


def test_forget_an_unknown_user_is_a_clear_error(settings):
    result = CliRunner().invoke(
        main,
        ["users", "forget", "nobody", "--yes"],
        env={"IMGCLASS_DATA_DIR": str(settings.data_dir)},
    )
    assert result.exit_code != 0 and "no user named 'nobody'" in result.output


def test_prune_deletes_old_events_and_unused_dimension_rows(app, settings, cat_jpeg, coffee_jpeg):
    from imgclass.warehouse.recorder import Event, ImageFacts, Recorder, utc_now

    recorder = Recorder(services(app).engine)
    old = utc_now() - timedelta(days=200)
    recorder.record(
        [
            Event(
                request_id="old-request",
                event_time=old,
                requester=Requester(0, "anonymous", "192.0.2.50", "old-agent"),
                endpoint="predict",
                status_code=422,
                time_taken_ms=3.0,
                image=ImageFacts("ab" * 32, "old.jpg", 10),
                error_code="corrupt_image",
            )
        ]
    )
    client = app.test_client()
    post_files(client, [("new.jpg", cat_jpeg)])
    assert count(app, "SELECT COUNT(*) FROM api_event_fact") == 2

    env = {"IMGCLASS_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["db", "prune", "--older-than", "90d", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "deleted 1 events" in result.output
    rows = fact_rows(app)
    assert [r["image_filename"] for r in rows] == ["new.jpg"]
    assert count(app, "SELECT COUNT(*) FROM user_dim WHERE user_agent = 'old-agent'") == 0
    assert count(app, "SELECT COUNT(*) FROM image_dim WHERE image_filename = 'old.jpg'") == 0
    assert count(app, "SELECT COUNT(*) FROM image_dim WHERE image_key = 0") == 1
    # The running app's cached keys stay valid or heal: it keeps recording.
    assert post_files(client, [("again.jpg", coffee_jpeg)]).status_code == 200

    bad = CliRunner().invoke(main, ["db", "prune", "--older-than", "soon", "--yes"], env=env)
    assert bad.exit_code != 0 and "neither a number of days" in bad.output


@pytest.mark.parametrize(
    ("older_than", "says"),
    [
        ("999999999d", "before the year 1"),  # was an OverflowError traceback
        ("0", "at least 1 day"),  # was: every event deleted, even seconds-old ones
        ("0d", "at least 1 day"),
        ("-5d", "at least 1 day"),
        ("2999-01-01", "is in the future"),  # was accepted: every event deleted
    ],
)
def test_prune_refuses_a_cutoff_that_is_not_in_the_past(app, settings, cat_jpeg, older_than, says):
    post_files(app.test_client(), [("new.jpg", cat_jpeg)])
    env = {"IMGCLASS_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["db", "prune", "--older-than", older_than, "--yes"], env=env)
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert count(app, "SELECT COUNT(*) FROM api_event_fact") == 1


def test_a_running_server_heals_when_prune_removes_a_cached_row(app, settings, cat_jpeg):
    client = app.test_client()
    agent = {"User-Agent": "soon-pruned"}
    assert post_files(client, [("a.jpg", cat_jpeg)], headers=agent).status_code == 200
    with services(app).engine.begin() as conn:  # make that event old
        conn.execute(text("UPDATE api_event_fact SET event_time = '2020-01-01 00:00:00'"))
    env = {"IMGCLASS_DATA_DIR": str(settings.data_dir)}
    assert (
        CliRunner().invoke(main, ["db", "prune", "--older-than", "30", "--yes"], env=env).exit_code
        == 0
    )
    assert count(app, "SELECT COUNT(*) FROM user_dim WHERE user_agent = 'soon-pruned'") == 0
    # The app's recorder still caches the deleted row's key; the write must heal, not fail.
    assert post_files(client, [("a.jpg", cat_jpeg)], headers=agent).status_code == 200
    assert [r["user_agent"] for r in fact_rows(app)] == ["soon-pruned"]


def test_prune_and_forget_keep_the_aggregates_equal_to_the_facts(app, settings, cat_jpeg):
    from sqlalchemy import select

    from imgclass.warehouse.aggregates import AGGREGATES, rebuild

    client = app.test_client()
    store = UserStore(services(app).engine)
    _carol, key = store.add("carol")
    for _ in range(2):
        post_files(client, [("a.jpg", cat_jpeg)], headers={"Authorization": f"Bearer {key}"})
    post_files(client, [("b.jpg", cat_jpeg)])
    with services(app).engine.begin() as conn:  # one old anonymous event
        conn.execute(
            text(
                "UPDATE api_event_fact SET event_time = '2020-01-01 00:00:00', "
                "timestamp_key = (SELECT MIN(timestamp_key) FROM time_dim) "
                "WHERE image_key = (SELECT image_key FROM image_dim WHERE image_filename = 'b.jpg')"
            )
        )
    env = {"IMGCLASS_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    assert runner.invoke(main, ["users", "forget", "carol", "--yes"], env=env).exit_code == 0
    assert (
        runner.invoke(main, ["db", "prune", "--older-than", "30", "--yes"], env=env).exit_code == 0
    )

    engine = services(app).engine

    def aggregates() -> dict:
        with engine.connect() as conn:
            return {t.name: sorted(map(tuple, conn.execute(select(t)))) for t in AGGREGATES}

    kept = aggregates()
    with engine.begin() as conn:
        rebuild(conn)
    assert kept == aggregates()
