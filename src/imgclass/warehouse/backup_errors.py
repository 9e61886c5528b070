"""Why a backup operation failed: typed errors the CLI prints and the API maps to a status.

Every message is one line that says what went wrong and, where there is one, what to do.
"""

from __future__ import annotations

from imgclass.errors import ServiceError


class BackupError(ServiceError):
    """A backup, verification, restore or prune could not be carried out."""

    status = 500
    code = "backup_failed"


class InvalidDestination(BackupError):
    """The destination is neither a directory nor ``s3://BUCKET[/PREFIX]``."""

    status = 400
    code = "invalid_backup_destination"


class BackupNotFound(BackupError):
    status = 404
    code = "backup_not_found"


class BackupCorrupt(BackupError):
    """A checksum, integrity check or row count disagrees with the manifest."""

    code = "backup_corrupt"


class BackupUnsupported(BackupError):
    """The configured database is neither a SQLite file nor PostgreSQL."""

    status = 501
    code = "backup_unsupported"


class BackupInProgress(BackupError):
    status = 409
    code = "backup_in_progress"


class RestoreRefused(BackupError):
    """Restoring would replace a database without ``--force``, or one that is in use."""

    status = 409
    code = "restore_refused"


class DestinationUnavailable(BackupError):
    """The S3 endpoint cannot be reached, the bucket is missing, or access is denied."""

    status = 503
    code = "backup_destination_unavailable"


class ToolUnavailable(BackupError):
    """pg_dump or pg_restore is missing, or too old for the server or the archive."""

    code = "backup_tool_unavailable"


class DatabaseUnavailable(BackupError):
    """The PostgreSQL server to back up from, verify on or restore into cannot be reached."""

    status = 503
    code = "storage_unavailable"
