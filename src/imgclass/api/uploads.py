"""The app's request class: uploaded files are parsed into memory, never into temporary files.

werkzeug spools a multipart file part larger than 500 KB to a temporary file in ``TMPDIR``.
imgclass reads every upload into memory right after parsing anyway (it is hashed, decoded and
recorded as bytes), and ``IMGCLASS_MAX_UPLOAD_BYTES`` bounds the whole body, so the temporary
file bought nothing but a dependency on a writable, roomy ``/tmp``: a full one (a small
memory-backed ``emptyDir`` in a pod, say) made uploads fail with a 500 from inside the parser.
"""

from __future__ import annotations

import io

from imgclass.api.form_limits import FileCountingRequest


class UploadRequest(FileCountingRequest):
    """Counts file parts while parsing (``form_limits``) and keeps each one in memory."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> io.BytesIO:
        # werkzeug's documented hook for where file parts go; the body is already bounded.
        return io.BytesIO()
