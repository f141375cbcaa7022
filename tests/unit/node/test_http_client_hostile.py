"""NodeHttpClient against a node that signs hostile answers: one-line NodeErrors, never a crash."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from chefsplan_agents.errors import NodeError
from chefsplan_agents.identity import Identity
from chefsplan_agents.node import NodeHttpClient
from chefsplan_agents.node._signing import HEADER_NONCE, sign_response

DEEP = b"[" * 200_000


class _HostileNode(BaseHTTPRequestHandler):
    """Answers every request with ``body``, correctly signed by the node's identity."""

    identity: ClassVar[Identity]
    body: ClassVar[bytes] = DEEP

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        signed = sign_response(
            self.identity, status=200, body=self.body, request_nonce=self.headers[HEADER_NONCE]
        )
        self.send_response(200)
        for name, value in signed.as_headers().items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture
def node() -> Iterator[tuple[str, Identity, type[_HostileNode]]]:
    identity = Identity.generate()
    handler = type("Node", (_HostileNode,), {"identity": identity, "body": DEEP})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", identity, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_deeply_nested_answer_is_a_malformed_answer(
    node: tuple[str, Identity, type[_HostileNode]],
) -> None:
    url, identity, _ = node
    client = NodeHttpClient(url, Identity.generate(), identity.did, timeout_s=10)
    for call in (client.availability, client.input_schema, lambda: client.status("job-1")):
        with pytest.raises(NodeError, match="malformed .* levels deep") as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":"ok","node_did":"d","schema_version":1,"model":null,'
        b'"price_per_1k_tokens_wei":Infinity,"queued":0,"running":0}',
        b'{"status":"ok","node_did":"d","schema_version":NaN,"model":null,'
        b'"price_per_1k_tokens_wei":1,"queued":0,"running":0}',
        b'{"status":"ok","node_did":"d","schema_version":1,"model":[[[]]],'
        b'"price_per_1k_tokens_wei":1,"queued":0,"running":0}',
    ],
)
def test_out_of_range_numbers_are_a_malformed_answer(
    node: tuple[str, Identity, type[_HostileNode]], body: bytes
) -> None:
    url, identity, handler = node
    handler.body = body
    client = NodeHttpClient(url, Identity.generate(), identity.did, timeout_s=10)
    with pytest.raises(NodeError, match="malformed /availability answer"):
        client.availability()


def test_a_deep_answer_does_not_kill_a_process_that_imported_the_chain(
    node: tuple[str, Identity, type[_HostileNode]],
) -> None:
    url, identity, _ = node
    program = (
        "import sys\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.errors import NodeError\n"
        "from chefsplan_agents.identity import Identity\n"
        "from chefsplan_agents.node import NodeHttpClient\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "client = NodeHttpClient(sys.argv[1], Identity.generate(), sys.argv[2], timeout_s=20)\n"
        "try:\n"
        "    client.availability()\n"
        "except NodeError:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, url, identity.did],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused"]
