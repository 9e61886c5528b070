"""A real S3-compatible HTTP server on loopback for tests: moto's server mode.

boto3 sends it the same signed HTTP requests it sends AWS or MinIO and gets S3's XML
answers and error codes back; moto keeps the objects in memory and does not check
signatures.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def settings_env(self) -> dict[str, str]:
        """The IMGCLASS_* variables that point imgclass at this server."""
        return {
            "IMGCLASS_S3_ENDPOINT_URL": self.endpoint_url,
            "IMGCLASS_S3_REGION": REGION,
            "IMGCLASS_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "IMGCLASS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """Run moto's S3 server on a free loopback port for the duration of the block."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (for an unreachable endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
