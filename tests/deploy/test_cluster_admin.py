"""`make cluster` prints an admin key that works, whatever the database already holds.

The replicas give their shared key (``.cluster/admin-key``) to the first admin of an empty
database only. When the database already has an admin (the key file was deleted by
``git clean -fdX``, or a second checkout uses the default ``imgclass_cluster`` database),
``ensure_admin_key`` gives the key to an admin of the run directory's own.
"""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request

import pytest

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.users import UserStore
from scripts.cluster import (
    Cluster,
    ClusterSpec,
    cluster_admin_name,
    ensure_admin_key,
    summary,
)
from tests.support.postgres import temporary_database
from tests.support.servers import free_port, http_get
from tests.support.system import require_binary


def new_key() -> str:
    return "imgc_" + secrets.token_urlsafe(32)


@pytest.fixture
def database_with_an_admin():
    """A migrated database whose admin's key no run directory here knows any more."""
    with temporary_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        UserStore(engine).add("admin", admin=True)
        engine.dispose()
        yield url


def admin_of(url: str, key: str) -> str | None:
    engine = make_engine(url)
    try:
        account = UserStore(engine).authenticate(key)
    finally:
        engine.dispose()
    return account.username if account is not None and account.is_admin else None


def test_a_fresh_databases_first_admin_keeps_the_key(tmp_path):
    with temporary_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        key = new_key()
        UserStore(engine).add("admin", admin=True, key=key)  # what the replicas' bootstrap does
        engine.dispose()
        assert ensure_admin_key(url, key, tmp_path) == "admin"
        assert admin_of(url, key) == "admin"


def test_the_key_works_when_the_database_already_had_an_admin(database_with_an_admin, tmp_path):
    url = database_with_an_admin
    checkout = tmp_path / "checkout" / ".cluster"
    first = new_key()
    assert ensure_admin_key(url, first, checkout) == cluster_admin_name(checkout)
    assert admin_of(url, first) == cluster_admin_name(checkout)
    assert ensure_admin_key(url, first, checkout) == cluster_admin_name(checkout)  # next run

    # The key file is deleted (git clean -fdX): the next run makes a new key, which works.
    again = new_key()
    assert ensure_admin_key(url, again, checkout) == cluster_admin_name(checkout)
    assert admin_of(url, again) == cluster_admin_name(checkout)
    assert admin_of(url, first) is None  # gone with its file

    # A second checkout on the same database gets an admin of its own: both keys work.
    other = tmp_path / "other" / ".cluster"
    assert cluster_admin_name(other) != cluster_admin_name(checkout)
    second = new_key()
    assert ensure_admin_key(url, second, other) == cluster_admin_name(other)
    assert admin_of(url, second) == cluster_admin_name(other)
    assert admin_of(url, again) == cluster_admin_name(checkout)


def http_get_with_key(url: str, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def printed(text: str, field: str) -> str:
    match = re.search(rf"^  {field}\s+(\S+)", text, re.MULTILINE)
    assert match, text
    return match.group(1)


@pytest.mark.slow
def test_the_printed_key_is_an_admin_key_of_the_running_cluster(
    database_with_an_admin, tmp_path, model_dir
):
    require_binary("nginx", "nginx")
    require_binary("prometheus", "prometheus")
    replica_port, nginx_port, prometheus_port = free_port(), free_port(), free_port()
    spec = ClusterSpec(
        run_dir=tmp_path / ".cluster",  # no admin-key file: a new key is made
        replicas=1,
        nginx_port=nginx_port,
        replica_ports=[replica_port],
        prometheus_port=prometheus_port,
        database_url=database_with_an_admin,
        redis_url=None,
        model_dir=model_dir,
    )
    with Cluster(spec) as cluster:
        text = summary(cluster)
        key = printed(text, "admin key")
        assert key == (spec.run_dir / "admin-key").read_text().strip()
        request = f"{cluster.url}/api/v1/drift"
        assert http_get(request)[0] == 401
        status, body = http_get_with_key(request, key)
        assert status == 200, body

        # Both Prometheus links work with the installed version (Debian's 2.42: /classic/…).
        line = next(ln for ln in text.splitlines() if ln.strip().startswith("prometheus"))
        links = re.findall(r"http://\S+[^\s)]", line)
        assert f"{cluster.prometheus_url}/api/v1/targets" in links and len(links) == 2
        for link in links:
            assert http_get(link)[0] == 200, link
