"""Raw bytes to a node's HTTP API over a socket, for requests no HTTP client would send, and the
stand-in job runner those tests serve."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chefsplan_agents.bundles import ResultBundle, TaskBundle, Timings, output_hash
from chefsplan_agents.identity import Identity

_STATUS = re.compile(rb"^HTTP/1\.[01] ([0-9]{3}) ")


@dataclass(frozen=True)
class RawAnswer:
    """What came back: the first status code, the whole reply, and whether the server closed."""

    status: int | None
    data: bytes
    closed: bool

    @property
    def body(self) -> Any:
        """The first response's JSON body."""
        head, _, rest = self.data.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length: *([0-9]+)\r?$", head)
        assert match is not None, head
        return json.loads(rest[: int(match.group(1))])


def exchange(
    address: tuple[str, int], data: bytes, *, timeout_s: float = 10.0, half_close: bool = True
) -> RawAnswer:
    """Send ``data``, then (by default) end the request stream, and read until the server
    closes or ``timeout_s`` passes."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse before reading everything: its answer still counts
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    reply = b"".join(chunks)
    match = _STATUS.match(reply)
    return RawAnswer(int(match.group(1)) if match else None, reply, closed)


def request(
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    raw_headers: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request as bytes (no Content-Length unless given)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n" + raw_headers + b"\r\n"
    return head + body


def reversing_runner(node: Identity) -> Callable[[TaskBundle, str], ResultBundle]:
    """A node's job runner that answers a prompt with its reverse (no model needed)."""

    def run(bundle: TaskBundle, bundle_cid: str) -> ResultBundle:
        text = (bundle.prompt or "")[::-1]
        return ResultBundle(
            task_cid=bundle_cid,
            output=text,
            token_ids=tuple(ord(ch) for ch in text),
            model_sha256="cd" * 32,
            llama_cpp_build="test",
            timings=Timings(prompt_tokens=1, generated_tokens=1, prompt_ms=1, generation_ms=1),
            node_did=node.did,
            output_hash=output_hash(text),
        )

    return run
