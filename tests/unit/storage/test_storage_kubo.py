"""KuboStore against a daemon that lies: a small HTTP server in a thread speaking the RPC API.

The real daemon runs in the conformance suite (``make integration``); here the daemon is
scripted so that it can return the wrong CID or the wrong bytes, which a real one never does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from chefsplan_agents.errors import CidMismatch, ContentNotFound, StorageError, StoreUnavailable
from chefsplan_agents.storage import CHUNK_SIZE, Cid, FileImporter, KuboStore, parse_cid
from chefsplan_agents.storage._kubo import (
    MAX_BLOCK_BYTES,
    MAX_JSON_ANSWER_BYTES,
    _json_documents,
)


class _Daemon(BaseHTTPRequestHandler):
    blocks: ClassVar[dict[bytes, bytes]] = {}
    add_answer: ClassVar[str] = ""
    received: ClassVar[list[int]] = []
    last_query: ClassVar[dict[str, list[str]]] = {}
    # "deep-error": every answer is a 500 whose body nests 200 000 levels; "deep-answer": add
    # answers such a document; "huge-block": block/get answers more bytes than any block holds.
    hostile: ClassVar[str] = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drain(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return total
                total += len(self.rfile.read(size))
                self.rfile.readline()
        return len(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def do_POST(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        type(self).last_query = query
        size = self._drain()
        if self.hostile == "deep-error":
            self._reply(500, b"[" * 200_000)
        elif self.hostile == "deep-answer" and url.path == "/api/v0/add":
            self._reply(200, b"[" * 200_000)
        elif self.hostile == "huge-answer" and url.path == "/api/v0/add":
            self._reply(200, b"[" + b"0," * (MAX_JSON_ANSWER_BYTES // 2) + b"0]")
        elif self.hostile == "many-lines" and url.path == "/api/v0/add":
            # Each line opens a string that never closes: the client's own parser retried the
            # growing rest of the answer once per line (quadratic: minutes for this).
            self._reply(200, b'"x\n' * 300_000)
        elif self.hostile == "pretty" and url.path == "/api/v0/add":
            answer = {"Name": "f", "Hash": self.add_answer, "Size": "1"}
            self._reply(200, json.dumps(answer, indent=2).encode())
        elif self.hostile == "pretty" and url.path == "/api/v0/block/get":
            error = {"Message": "block not found", "Code": 0, "Type": "error"}
            self._reply(500, json.dumps(error, indent=2).encode())
        elif self.hostile == "huge-block" and url.path == "/api/v0/block/get":
            self._reply(200, b"\0" * (MAX_BLOCK_BYTES + 1), "application/octet-stream")
        elif url.path == "/api/v0/add":
            type(self).received.append(size)
            answer = {"Name": "f", "Hash": self.add_answer, "Size": "1"}
            self._reply(200, json.dumps(answer).encode())
        elif url.path == "/api/v0/block/get":
            block = self.blocks.get(parse_cid(query["arg"][0]).multihash)
            if block is None:
                error = {"Message": "block not found", "Code": 0, "Type": "error"}
                self._reply(500, json.dumps(error).encode())
            else:
                self._reply(200, block, "application/octet-stream")
        else:
            self._reply(404, b'{"Message": "no such endpoint", "Code": 0, "Type": "error"}')


@pytest.fixture
def daemon() -> Iterator[tuple[type[_Daemon], str]]:
    handler = type(
        "Daemon", (_Daemon,), {"blocks": {}, "received": [], "add_answer": "", "hostile": ""}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield handler, f"/ip4/127.0.0.1/tcp/{server.server_address[1]}/http"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _dag(data: bytes) -> tuple[str, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}

    def keep(cid: Cid, block: bytes) -> None:
        blocks[cid.multihash] = block

    importer = FileImporter(1, keep)
    importer.write(data)
    return str(importer.finish()), blocks


def test_put_accepts_the_daemon_when_it_agrees(daemon: tuple[type[_Daemon], str]) -> None:
    handler, api = daemon
    data = os.urandom(CHUNK_SIZE + 10)
    cid, _ = _dag(data)
    handler.add_answer = cid
    with KuboStore(api, timeout_s=5) as store:
        assert store.put(data) == cid
    assert handler.received and handler.received[0] > len(data)  # multipart framing around it
    assert handler.last_query["cid-version"] == ["1"]
    assert handler.last_query["raw-leaves"][0].lower() == "true"
    assert handler.last_query["chunker"] == [f"size-{CHUNK_SIZE}"]


def test_put_refuses_a_daemon_announcing_another_cid(daemon: tuple[type[_Daemon], str]) -> None:
    handler, api = daemon
    cid, _ = _dag(b"what we sent")
    wrong, _ = _dag(b"something else")
    handler.add_answer = wrong
    with KuboStore(api, timeout_s=5) as store, pytest.raises(CidMismatch) as info:
        store.put(b"what we sent")
    assert info.value.expected == cid
    assert info.value.actual == wrong


def test_put_refuses_a_garbage_answer(daemon: tuple[type[_Daemon], str]) -> None:
    handler, api = daemon
    handler.add_answer = "not-a-cid"
    with KuboStore(api, timeout_s=5) as store, pytest.raises(CidMismatch, match="not-a-cid"):
        store.put(b"x")


def test_get_verifies_every_block(daemon: tuple[type[_Daemon], str]) -> None:
    handler, api = daemon
    data = os.urandom(3 * CHUNK_SIZE)
    cid, blocks = _dag(data)
    handler.blocks.update(blocks)
    with KuboStore(api, timeout_s=5) as store:
        assert store.get(cid) == data
        # The daemon now flips one byte of the middle leaf.
        leaf = parse_cid(_dag(data[CHUNK_SIZE : 2 * CHUNK_SIZE])[0])
        bad = bytearray(blocks[leaf.multihash])
        bad[7] ^= 0x80
        handler.blocks[leaf.multihash] = bytes(bad)
        with pytest.raises(CidMismatch) as info:
            store.get(cid)
        assert info.value.expected == str(leaf)
        chunks = store.iter_chunks(cid)
        assert next(chunks) == data[:CHUNK_SIZE]
        with pytest.raises(CidMismatch):
            next(chunks)


def test_get_missing_block(daemon: tuple[type[_Daemon], str]) -> None:
    _, api = daemon
    cid, _ = _dag(b"never added")
    with KuboStore(api, timeout_s=5) as store, pytest.raises(ContentNotFound, match=cid):
        store.get(cid)


def test_other_daemon_errors_are_storage_errors(daemon: tuple[type[_Daemon], str]) -> None:
    _, api = daemon
    cid, _ = _dag(b"x")
    with KuboStore(api, timeout_s=5) as store, pytest.raises(StorageError, match="refused") as info:
        store.is_pinned(cid)  # the fake daemon has no pin/ls endpoint
    assert "\n" not in str(info.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_daemon_names_its_address() -> None:
    api = f"/ip4/127.0.0.1/tcp/{_free_port()}/http"
    with KuboStore(api, timeout_s=2) as store:
        for call in (lambda: store.put(b"x"), lambda: store.get(_dag(b"x")[0])):
            with pytest.raises(StoreUnavailable) as info:
                call()
            message = str(info.value)
            assert api in message
            assert "\n" not in message


def test_invalid_address() -> None:
    with pytest.raises(StoreUnavailable, match="not valid"):
        KuboStore("http://127.0.0.1:5001")


_DEEP_DAEMON_PROGRAM = """
import sys
import chefsplan_agents.chain  # web3 -> py_ecc raises the recursion limit to 100000
from chefsplan_agents.errors import StorageError
from chefsplan_agents.storage import KuboStore
assert sys.getrecursionlimit() >= 100000
api, cid = sys.argv[1], sys.argv[2]
with KuboStore(api, timeout_s=20) as store:
    for name, call in (("put", lambda: store.put(b"x")), ("get", lambda: store.get(cid))):
        try:
            call()
        except StorageError as err:
            assert "\\n" not in str(err), err
            print(name, type(err).__name__)
"""


@pytest.mark.parametrize("mode", ["deep-error", "deep-answer"])
def test_deeply_nested_daemon_answers_are_storage_errors(
    daemon: tuple[type[_Daemon], str], mode: str
) -> None:
    # Run where the recursion limit is raised, as in any process that imported the chain
    # layer: there the client's own json parser would overflow the C stack (SIGSEGV).
    handler, api = daemon
    handler.hostile = mode
    cid, blocks = _dag(b"x")
    handler.blocks.update(blocks)
    done = subprocess.run(
        [sys.executable, "-c", _DEEP_DAEMON_PROGRAM, api, cid],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")
    assert "put StorageError" in lines
    if mode == "deep-error":
        assert "get StorageError" in lines


def test_an_oversized_block_is_refused(daemon: tuple[type[_Daemon], str]) -> None:
    handler, api = daemon
    handler.hostile = "huge-block"
    cid, _ = _dag(b"x")
    with KuboStore(api, timeout_s=5) as store, pytest.raises(StorageError, match="over 4194304"):
        store.get(cid)


@pytest.mark.parametrize("mode", ["huge-answer", "many-lines"])
def test_oversized_and_unparseable_answers_are_storage_errors(
    daemon: tuple[type[_Daemon], str], mode: str
) -> None:
    handler, api = daemon
    handler.hostile = mode
    with KuboStore(api, timeout_s=20) as store, pytest.raises(StorageError, match="failed add"):
        store.put(b"x")


def test_pretty_printed_answers_still_parse(
    daemon: tuple[type[_Daemon], str],
) -> None:
    handler, api = daemon
    handler.hostile = "pretty"
    cid, _ = _dag(b"x")
    handler.add_answer = cid
    with KuboStore(api, timeout_s=5) as store:
        assert store.put(b"x") == cid
        with pytest.raises(ContentNotFound, match="block not found"):
            store.get(cid)


def test_concatenated_documents_are_read_in_one_pass() -> None:
    text = '{"Name": "a"}{"Name":\n "b"}\n\n[1, 2]\n'
    assert _json_documents(text) == [{"Name": "a"}, {"Name": "b"}, [1, 2]]
    assert _json_documents(" \n") == []
    with pytest.raises(ValueError):
        _json_documents('{"Name": "a"} garbage')
    with pytest.raises(ValueError, match="65 levels deep"):
        _json_documents("{}" + "[" * 65 + "]" * 65)
