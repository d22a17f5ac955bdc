"""fetch_url's retries (urllib3 Retry on the session's adapter) against a 127.0.0.1 server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ferdata.sources.fetch import FetchPolicy, fetch_url, make_session


@pytest.fixture
def flaky() -> Iterator[tuple[str, dict[str, int]]]:
    """/flaky answers 503 (Retry-After: 3600) twice, then 200; /gone is a 404; /down always 500."""
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/flaky" and hits[self.path] <= 2 or self.path == "/down":
                self.send_response(503 if self.path == "/flaky" else 500)
                self.send_header("Retry-After", "3600")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 404 if self.path == "/gone" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_transient_statuses_are_retried_without_obeying_retry_after(flaky) -> None:
    import requests

    base, hits = flaky
    policy = FetchPolicy(retries=2, retry_backoff=0.01, loopback_only=True)
    start = time.monotonic()
    got = fetch_url(f"{base}/flaky", policy, requests.Session())  # a plain session gets the retrying adapter
    assert got.ok and got.data == b"ok" and got.attempts == 3 and hits["/flaky"] == 3
    assert time.monotonic() - start < 5  # Retry-After: 3600 ignored
    got = fetch_url(f"{base}/down", policy, make_session(policy=policy))
    assert got.reason == "http_500" and got.attempts == 3 and hits["/down"] == 3
    got = fetch_url(f"{base}/gone", policy, make_session(policy=policy))
    assert got.reason == "http_404" and got.attempts == 1 and hits["/gone"] == 1  # permanent: asked once


def test_connection_errors_are_retried_and_bounded() -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = FetchPolicy(retries=1, retry_backoff=0.01, loopback_only=True)
    got = fetch_url(f"http://127.0.0.1:{port}/x", policy, make_session(policy=policy))
    assert got.reason == "connection_error" and got.attempts == 2
