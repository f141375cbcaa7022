"""JsonRpcChain against a hostile or broken RPC endpoint: one-line ChainUnavailable, never a crash.

web3's own HTTP provider reads whole replies and parses them with plain ``json``; with py_ecc's
raised recursion limit a deeply nested reply overflows the C stack, and a huge one is held in
memory whole. Each test here runs a real HTTP server on 127.0.0.1 that answers every request
with the bytes under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from chefsplan_agents.chain import JsonRpcChain
from chefsplan_agents.chain._jsonrpc import MAX_RPC_REPLY_BYTES
from chefsplan_agents.errors import ChainUnavailable, TransactionFailed

DEEP = b"[" * 1_000_000
CHAIN_ID_REPLY = b'{"jsonrpc": "2.0", "id": 0, "result": "0x7a69"}'


class _Endpoint(BaseHTTPRequestHandler):
    """Answers every POST with ``body``; ``declared`` overrides Content-Length (``None``: no
    length, the body ends when the connection closes); ``drip_s`` sends one byte at a time."""

    protocol_version = "HTTP/1.0"
    body: ClassVar[bytes] = CHAIN_ID_REPLY
    declared: ClassVar[int | None] = -1
    drip_s: ClassVar[float] = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        length = len(self.body) if self.declared == -1 else self.declared
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            if self.drip_s:
                for i in range(len(self.body)):
                    self.wfile.write(self.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(self.drip_s)
            else:
                self.wfile.write(self.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[_Endpoint]]]:
    handler = type("Endpoint", (_Endpoint,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _refused(url: str, timeout_s: float = 10.0) -> str:
    with pytest.raises(ChainUnavailable) as info:
        JsonRpcChain(url, timeout_s=timeout_s)
    message = str(info.value)
    assert "\n" not in message and url in message
    return message


def test_a_well_formed_reply_opens_the_chain(endpoint: tuple[str, type[_Endpoint]]) -> None:
    url, _ = endpoint
    chain = JsonRpcChain(url, chain_id=31337)
    try:
        assert chain.chain_id == 31337
    finally:
        chain.close()


def test_a_deep_reply_does_not_kill_a_process_that_imported_the_chain(
    endpoint: tuple[str, type[_Endpoint]],
) -> None:
    url, handler = endpoint
    handler.body = DEEP
    program = (
        "import sys\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.chain import JsonRpcChain\n"
        "from chefsplan_agents.errors import ChainUnavailable\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "try:\n"
        "    JsonRpcChain(sys.argv[1])\n"
        "except ChainUnavailable as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout[-2000:]
    assert url in lines[0] and "eth_chainId" in lines[0] and "1000000 levels deep" in lines[0]


def test_a_deep_reply_is_refused_in_process(endpoint: tuple[str, type[_Endpoint]]) -> None:
    url, handler = endpoint
    handler.body = b'{"jsonrpc": "2.0", "id": 0, "result": ' + b"[" * 100 + b"]" * 100 + b"}"
    assert "levels deep" in _refused(url)


@pytest.mark.parametrize("declared", [-1, None], ids=["content-length", "until-close"])
def test_a_huge_reply_is_refused_past_the_cap(
    endpoint: tuple[str, type[_Endpoint]], declared: int | None
) -> None:
    # A valid reply: without the cap it would be read and parsed whole (chain id 1).
    url, handler = endpoint
    padding = MAX_RPC_REPLY_BYTES + (1 << 20)
    handler.body = b'{"jsonrpc": "2.0", "id": 0, "result": "0x' + b"0" * padding + b'1"}'
    handler.declared = declared
    assert f"over the limit of {MAX_RPC_REPLY_BYTES} bytes" in _refused(url)


def test_a_declared_length_over_the_cap_is_refused_unread(
    endpoint: tuple[str, type[_Endpoint]],
) -> None:
    url, handler = endpoint
    handler.declared = 1 << 40
    assert f"{1 << 40} bytes" in _refused(url)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\x00garbage",
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"jsonrpc": "2.0", "id": 0, "result": "0x7a69"',
        b"",
        b'["not", "an", "object"]',
        b"null",
    ],
    ids=["not-utf8", "html", "truncated", "empty", "array", "null"],
)
def test_garbage_is_a_one_line_error(endpoint: tuple[str, type[_Endpoint]], body: bytes) -> None:
    url, handler = endpoint
    handler.body = body
    assert "not a JSON-RPC reply" in _refused(url)


def test_a_reply_dripped_past_the_timeout_is_refused(
    endpoint: tuple[str, type[_Endpoint]],
) -> None:
    # Each byte arrives well within the socket's read timeout (a wide margin for a loaded
    # machine); the whole reply, 200 s of bytes, does not arrive within it.
    url, handler = endpoint
    handler.body = b" " * 10_000 + CHAIN_ID_REPLY
    handler.drip_s = 0.02
    assert "did not finish its reply" in _refused(url, timeout_s=3.0)


def test_a_node_error_message_is_cut_to_one_short_line(
    endpoint: tuple[str, type[_Endpoint]],
) -> None:
    url, handler = endpoint
    words = "first line\nsecond line\r\n" + "x" * 100_000
    handler.body = json.dumps(
        {"jsonrpc": "2.0", "id": 0, "error": {"code": -32000, "message": words}}
    ).encode()
    with pytest.raises(TransactionFailed) as info:
        JsonRpcChain(url)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert "first line second line" in message and len(message) < 500
