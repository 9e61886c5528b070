"""IMGCLASS_ADMIN_KEY: the first admin's key comes from a secret store, never printed or saved."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imgclass.app import create_app, services
from imgclass.config import Settings
from tests.conftest import make_settings

KEY = "imgc_" + "k" * 40


def with_key(settings: Settings) -> Settings:
    return make_settings(settings.data_dir, settings.model_dir, admin_key=KEY)


def test_the_given_key_is_the_admins_and_is_not_written_anywhere(settings, capfd):
    app = create_app(with_key(settings))
    try:
        account = services(app).users.authenticate(KEY)
        assert account is not None and account.is_admin and account.username == "admin"
        assert not settings.admin_token_path.exists()
        out, err = capfd.readouterr()
        assert KEY not in out + err
        assert KEY not in repr(with_key(settings))
        # Another replica starting with the same secret creates nothing more.
        services(create_app(with_key(settings))).engine.dispose()
        assert [a.username for a in services(app).users.list()] == ["admin"]
    finally:
        services(app).engine.dispose()


def test_without_the_key_the_first_admin_gets_a_random_one(settings):
    app = create_app(settings)
    try:
        key = settings.admin_token_path.read_text().strip()
        assert key != KEY and services(app).users.authenticate(key).is_admin
    finally:
        services(app).engine.dispose()


@pytest.mark.parametrize("weak", ["short", "imgc_ " + "x" * 40])
def test_a_weak_admin_key_is_refused_at_start(tmp_path, weak):
    with pytest.raises(ValidationError, match="at least 32 characters without spaces"):
        Settings(data_dir=tmp_path, admin_key=weak)
