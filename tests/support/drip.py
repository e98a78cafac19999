"""A slow server for deadline tests: a TCP relay in front of a real server that, once triggered,
passes the server's replies on `chunk` bytes every `every` seconds.

The client's bytes always go through at once, so the server sees every command when it is sent;
only the answers crawl -- a node that accepts, reads and then answers one byte a second, which a
per-read socket timeout never catches. What makes a connection slow:

- `trigger=(b"SETUSER", b"WHOAMI")`: byte patterns seen in order in the client traffic of the
  whole proxy (any connection, across reads); the connection that completes the sequence
  crawls from then on (and `triggered` is set). Other connections stay fast.
- `from_start=True`: every connection crawls from its first reply.
- `drip()`: every connection, open or new, crawls from now on; `drip_newest()`: only the
  connection opened last (for TLS, whose bytes can't be matched: call it from a test hook at
  the right moment).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket):
        self.client = client
        self.server = server
        self.dripping = False
        self.closed = threading.Event()
        self.tail = b""  # the end of the last read, so a pattern split across reads is found

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class DripProxy:
    def __init__(
        self,
        target: str,
        *,
        trigger: Sequence[bytes] = (),
        every: float = 1.0,
        chunk: int = 1,
        from_start: bool = False,
    ):
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.trigger = list(trigger)
        self.every = every
        self.chunk = chunk
        self.all_drip = from_start
        self.triggered = threading.Event()
        self.matched = 0  # how many trigger patterns were seen so far
        self.lock = threading.Lock()
        self.links: list[_Link] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "DripProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def drip(self) -> None:
        with self.lock:
            self.all_drip = True
            for link in self.links:
                link.dripping = True
        self.triggered.set()

    def drip_newest(self) -> None:
        with self.lock:
            self.links[-1].dripping = True
        self.triggered.set()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            link.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self.lock:
                link.dripping = self.all_drip
                self.links.append(link)
            threading.Thread(target=self._up, args=(link,), daemon=True).start()
            threading.Thread(target=self._down, args=(link,), daemon=True).start()

    def _see(self, link: _Link, data: bytes) -> None:
        """Advance the trigger over what this connection sent; the one that completes it crawls."""
        if not self.trigger:
            return
        text = link.tail + data
        with self.lock:
            at = 0
            while self.matched < len(self.trigger):
                found = text.find(self.trigger[self.matched], at)
                if found < 0:
                    break
                at = found + len(self.trigger[self.matched])
                self.matched += 1
                if self.matched == len(self.trigger):
                    link.dripping = True
                    self.triggered.set()
            longest = max(len(p) for p in self.trigger)
            link.tail = text[-(longest - 1) :] if longest > 1 else b""

    def _up(self, link: _Link) -> None:
        try:
            while not link.closed.is_set():
                data = link.client.recv(65536)
                if not data:
                    break
                self._see(link, data)
                link.server.sendall(data)
        except OSError:
            pass
        link.close()

    def _down(self, link: _Link) -> None:
        try:
            while not link.closed.is_set():
                data = link.server.recv(65536)
                if not data:
                    break
                if not link.dripping:
                    link.client.sendall(data)
                    continue
                for i in range(0, len(data), self.chunk):
                    time.sleep(self.every)
                    if link.closed.is_set():
                        return
                    link.client.sendall(data[i : i + self.chunk])
        except OSError:
            pass
        link.close()
