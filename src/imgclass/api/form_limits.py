"""The app's request class: a multipart form with more files than a request may carry is
refused as ``too_many_files`` while it is parsed, before werkzeug's cruder part limit.

werkzeug bounds a form by its number of parts (``MAX_FORM_PARTS``) and answers a form over it
with ``RequestEntityTooLarge``, which the API reported as a body over the upload limit: 1,200
tiny files in a 200 KB body got 413 "the request body exceeds the limit of 20,971,520 bytes".
Here every file part is counted as the parser meets it (werkzeug asks the stream factory for a
place to put each file), and the first one past ``IMGCLASS_MAX_FILES_PER_REQUEST`` stops the
parse with 400 ``too_many_files``, the answer 17 files get. ``MAX_FORM_PARTS`` stays, a little
higher, as the bound on parts that are not files.
"""

from __future__ import annotations

from flask import Request, current_app
from werkzeug.formparser import FormDataParser

from imgclass.errors import BadRequest

MAX_FILES_CONFIG = "IMGCLASS_MAX_FILES_PER_REQUEST"


def too_many_files(limit: int, sent: str) -> BadRequest:
    return BadRequest(f"{sent} files sent; at most {limit} per request", code="too_many_files")


class FileCountingRequest(Request):
    def make_form_data_parser(self) -> FormDataParser:
        parser = super().make_form_data_parser()
        limit = current_app.config.get(MAX_FILES_CONFIG)
        if limit is None:
            return parser
        make_stream = parser.stream_factory
        seen = 0

        def counted(*args, **kwargs):
            nonlocal seen
            seen += 1
            if seen > limit:
                # Not a ValueError: werkzeug's parser swallows those into an empty form.
                raise too_many_files(limit, f"more than {limit}")
            return make_stream(*args, **kwargs)

        parser.stream_factory = counted
        return parser
