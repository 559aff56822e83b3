"""The service check before a run: an unreachable service or a rejected key fails with what to check, and the
number of attempts is bounded by design (counted on a local stub server, never timed)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from subprocess_env import ENV

from cookbook.errors import ConfigurationError
from cookbook.recipes.common import preflight

SMALL = ["max_steps=3", "save_every=0", "eval_every=0", "lora_rank=4"]


class Stub:
    """A local HTTP server answering every request with one status; records (path, X-API-Key) per request."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.requests: list[tuple[str, str | None]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append((self.path, self.headers.get("X-API-Key")))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[Stub]:
    status, body = request.param
    s = Stub(status, body)
    try:
        yield s
    finally:
        s.close()


REJECT = (401, {"detail": "Invalid API key"})
CAPS = (200, {"supported_models": []})


@pytest.mark.parametrize("stub", [REJECT, (403, {"detail": "forbidden"})], indirect=True)
def test_a_rejected_key_fails_at_once_naming_the_key(stub: Stub) -> None:
    with pytest.raises(ConfigurationError) as err:
        preflight(stub.url, "tml-rejected", "the service")
    assert stub.requests == [("/api/v1/get_server_capabilities", "tml-rejected")]  # sent the SDK's header, no retry
    assert "TINKER_API_KEY" in str(err.value)


@pytest.mark.parametrize("stub", [CAPS], indirect=True)
def test_an_answering_service_passes(stub: Stub) -> None:
    preflight(stub.url, "tml-good", "the service")
    assert len(stub.requests) == 1


@pytest.mark.parametrize("stub", [(503, {"detail": "down"}), (429, {"detail": "slow down"})], indirect=True)
def test_a_failing_service_is_retried_a_bounded_number_of_times(stub: Stub) -> None:
    with pytest.raises(ConfigurationError) as err:
        preflight(stub.url, "tml-good", "the service", attempts=3)
    assert len(stub.requests) == 3
    assert stub.url in str(err.value)


@pytest.mark.parametrize("stub", [(404, {"detail": "not found"})], indirect=True)
def test_a_url_that_is_not_a_tinker_root_is_named(stub: Stub) -> None:
    with pytest.raises(ConfigurationError) as err:
        preflight(stub.url + "/wrong", "tml-good", "the service")
    assert len(stub.requests) == 1 and stub.url in str(err.value)


def test_a_silent_server_is_given_up_on_after_the_bounded_attempts() -> None:
    """Accepts connections, never answers: each attempt ends at its read timeout; two attempts, then the error."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(sock.accept()[0])
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with pytest.raises(ConfigurationError) as err:
            preflight(url, "tml-good", "the service", connect_s=0.5, read_s=0.3, attempts=2)
    finally:
        sock.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 2
    assert url in str(err.value)


def test_a_refused_connection_and_a_malformed_key_fail_with_what_to_check() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigurationError) as err:
        preflight(f"http://127.0.0.1:{port}", "tml-good", "the service")
    assert f"127.0.0.1:{port}" in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        preflight(f"http://127.0.0.1:{port}", "sk-not-a-tinker-key", "the service")
    assert "TINKER_API_KEY" in str(err.value)


@pytest.mark.e2e
@pytest.mark.parametrize("stub", [REJECT], indirect=True)
@pytest.mark.parametrize("how", ["TINKER_BASE_URL", "base_url"])
def test_a_recipe_with_a_rejected_key_exits_non_zero_naming_the_key(stub: Stub, how: str, tmp_path: Path) -> None:
    env = {**ENV, "TINKER_API_KEY": "tml-rejected"}
    args = [sys.executable, "-m", "cookbook", "run", "sl_basic", f"log_path={tmp_path / 'run'}", *SMALL]
    if how == "base_url":
        args.append(f"base_url={stub.url}")
    else:
        env["TINKER_BASE_URL"] = stub.url
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=280)  # a hang guard, not a timing
    assert out.returncode not in (0, None), out.stdout[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "TINKER_API_KEY" in out.stderr
    assert stub.requests == [("/api/v1/get_server_capabilities", "tml-rejected")]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
