"""An HTTP proxy in front of a real OpenBao, to stop a process at an exact request.

The reconciler under test gets the proxy's address as VAULT_ADDR. `hold(predicate)` makes the
first request the predicate accepts wait until the test says what happens to it: `release()`
forwards it (the store answers as it would), `drop()` answers 502 without forwarding (the store
never sees it). Meanwhile `held` is set, so the test knows exactly where the process is -- e.g.
between adding a token on the servers and writing it to the store -- and can kill it there.
`lie(rewrite)`: every answer passes through `rewrite(method, path, body)` first (a store that
answers 200 with what it likes).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import requests

Predicate = Callable[[str, str], bool]  # (method, path) -> hold this one?
Rewrite = Callable[[str, str, bytes], bytes]  # (method, path, the store's answer) -> the answer sent
FORWARDED = ("X-Vault-Token", "X-Vault-Namespace", "Content-Type", "X-Vault-Request")


class StoreProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.held = threading.Event()
        self._decided = threading.Event()
        self._forward = True
        self._predicate: Predicate | None = None
        self._rewrite: Rewrite | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not proxy._wait_if_held(self.command, self.path):
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: self.headers[k] for k in FORWARDED if self.headers.get(k)}
                r = requests.request(self.command, proxy.upstream + self.path, headers=headers, data=body,
                                     allow_redirects=False, timeout=30)
                content = proxy._rewrite(self.command, self.path, r.content) if proxy._rewrite else r.content
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, predicate: Predicate) -> None:
        """Hold the next request `predicate` accepts (one only)."""
        with self._lock:
            self._predicate = predicate
            self.held.clear()
            self._decided.clear()

    def lie(self, rewrite: Rewrite | None) -> None:
        self._rewrite = rewrite

    def release(self) -> None:
        self._forward = True
        self._decided.set()

    def drop(self) -> None:
        self._forward = False
        self._decided.set()

    def wait_held(self, timeout: float = 60.0) -> None:
        assert self.held.wait(timeout), f"no held request within {timeout} s; seen: {self.seen[-10:]}"

    def _wait_if_held(self, method: str, path: str) -> bool:
        with self._lock:
            self.seen.append((method, path))
            mine = self._predicate is not None and self._predicate(method, path)
            if mine:
                self._predicate = None
        if not mine:
            return True
        self.held.set()
        self._decided.wait(120)
        return self._forward

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def store_write(method: str, path: str) -> bool:
    """A new KV version being written (not a permission check, not a read)."""
    return method == "POST" and path.startswith("/v1/secret/data/")
