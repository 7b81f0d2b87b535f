"""A TCP proxy on loopback that counts bytes, holds one direction, or cuts the line: for tests and benchmarks.

``with TcpProxy(broker.host, broker.port) as proxy:`` listens on
``proxy.port`` and forwards every connection to the target. It counts what
passes each way (``proxy.up`` client to server, ``proxy.down`` server to
client: ``bytes`` and ``chunks``, one chunk per ``recv``, a stand-in for TCP
segments), so a benchmark measures what a client really sends through TLS.
``hold_down()`` stops forwarding server-to-client bytes (a PUBACK that never
arrives) until ``release_down()``; ``cut()`` drops every open connection (a
cellular link that dies without a FIN from the broker). Counting happens on
plaintext TCP payload, i.e. the TLS records; IP and TCP headers are not seen.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

__all__ = ("TcpProxy", "Counter")

_CHUNK = 65536


class Counter:
    """Bytes and recv chunks in one direction."""

    def __init__(self) -> None:
        self.bytes = 0
        self.chunks = 0

    def __repr__(self) -> str:
        return "Counter(bytes=%d, chunks=%d)" % (self.bytes, self.chunks)


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``(host, target_port)``, counting both ways."""

    def __init__(self, host: str, target_port: int, port: int = 0):
        self.target = (host, target_port)
        self.host = "127.0.0.1"
        self._listener = socket.create_server((self.host, port))
        self.port = self._listener.getsockname()[1]
        self.up = Counter()
        self.down = Counter()
        self.connections = 0
        self._lock = threading.Lock()
        self._down_open = threading.Event()
        self._down_open.set()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    def start(self) -> TcpProxy:
        """Start accepting connections; returns the proxy."""
        self._acceptor.start()
        return self

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset_counts(self) -> None:
        """Start counting both directions from zero again."""
        with self._lock:
            self.up, self.down = Counter(), Counter()

    def hold_down(self) -> None:
        """Stop forwarding server-to-client bytes (they wait in the proxy) until ``release_down``."""
        self._down_open.clear()

    def release_down(self) -> None:
        """Forward server-to-client bytes again, the held ones first."""
        self._down_open.set()

    def cut(self) -> None:
        """Drop every open connection, both sides, at once."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)

    def stop(self) -> None:
        """Close the listener and every connection, and join the threads."""
        self._closed = True
        self._down_open.set()
        _close(self._listener)
        self.cut()
        for t in [self._acceptor] + self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=2)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._socks += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), name="proxy-pump", daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                if not up:
                    self._down_open.wait()
                with self._lock:
                    c = self.up if up else self.down
                    c.bytes += len(data)
                    c.chunks += 1
                dst.sendall(data)
        except OSError:
            pass  # the other pump or cut() closed the pair: the connection is over either way
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
