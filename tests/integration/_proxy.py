"""A loopback TCP proxy that a test can cut and restore, to make a server vanish for a while."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"


class CuttableProxy:
    """Forwards ``listen_host:port`` to ``target``; :meth:`cut` makes the port refuse
    connections and drops the live ones, :meth:`restore` listens on the same port again.

    Args:
        target_host: Where connections go.
        target_port: Its port.
        listen_host: The address to listen on (default loopback).
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0
        self.peers: set[str] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._live: set[socket.socket] = set()
        self._listen()

    @property
    def url(self) -> str:
        """The proxy as an HTTP URL."""
        return f"http://{self.listen_host}:{self.port}"

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, peer = listener.accept()
            except OSError:
                return  # the listener was closed: cut or shut down
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                self.peers.add(str(peer[0]))
                self._live.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Stop listening (new connections are refused) and drop every live connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            self._drop(sock)

    def restore(self) -> None:
        """Listen on the same port again."""
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        """Cut for good."""
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
