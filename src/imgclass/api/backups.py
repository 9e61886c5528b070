"""``/api/v1/admin/backups`` (admin key only): take a backup now, list backups and their age.

``POST`` backs up to the configured destination while the request waits, in a child
process (``warehouse/backup_process.py``: the worker's memory stays flat), and answers
with the manifest (201); a second POST while one runs gets 409. SQLite and PostgreSQL
(pg_dump) alike. For large warehouses schedule ``imgclass backup create`` instead: a
request is bounded by the proxy's timeout.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from imgclass.app import services
from imgclass.ops.auth import require_admin
from imgclass.warehouse import backup
from imgclass.warehouse.backup_process import create_in_child

bp = Blueprint("admin_backups", __name__, url_prefix="/api/v1/admin")


def _backups() -> backup.Backups:
    svc = services(current_app)
    require_admin(svc.users, request.headers.get("Authorization"))
    return backup.Backups(svc.settings, svc.engine)


@bp.post("/backups")
def create_backup():
    """Back up the warehouse now.
    ---
    post:
      summary: Take a backup now, to the configured destination (admin)
      tags: [backups]
      security: [{apiKey: []}]
      responses:
        "201":
          description: the new backup's manifest
          content:
            application/json:
              schema: BackupManifest
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
        "409":
          $ref: "#/components/responses/Conflict"
        "500":
          description: "`backup_failed`, or `backup_tool_unavailable`: on PostgreSQL, pg_dump is
            missing or older than the server (the message names the package to install)"
          content:
            application/json:
              schema: Error
        "503":
          $ref: "#/components/responses/Unavailable"
    """
    manifest = create_in_child(_backups().settings)
    return jsonify(manifest.to_json()), 201


@bp.get("/backups")
def list_backups():
    """List the backups.
    ---
    get:
      summary: Backups at the configured destination, newest first, and the newest one's age
      tags: [backups]
      security: [{apiKey: []}]
      responses:
        "200":
          description: the backups
          content:
            application/json:
              schema: BackupList
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
        "503":
          $ref: "#/components/responses/Unavailable"
    """
    backups = _backups()
    store = backups.store()
    entries = backup.list_backups(store)
    newest = [e.manifest.created_at.timestamp() for e in entries[:1]]
    local = backup.last_backup_time(backups.settings, backups.engine)
    known = max([*newest, *([local] if local is not None else [])], default=None)
    return jsonify(
        destination=store.description,
        last_backup_age_seconds=round(time.time() - known, 3) if known is not None else None,
        backups=[e.to_json() for e in entries],
    )
