"""A TCP server that talks just enough RESP to pass for a Redis 7.2 primary (AUTH, INFO, CONFIG
GET) and answers `ACL LOG` with what a proxy or a look-alike server might send instead: a
count that is not a number, an age that is not one, a string where a list belongs; or
refuses everything with an error that is Markdown, HTML and terminal escapes (`html`). For the
promise that one such node is reported as not read while the others' logs are still shown."""

from __future__ import annotations

import socket
import threading

HTML = b"<img src=x onerror=alert(1)> ``` </details> **bold** [link](http://example.invalid)\x1b[2J"  # one RESP line
LIES = {
    "count": [b"count", b"lots", b"reason", b"auth", b"object", b"AUTH", b"username", b"x", b"age-seconds", b"1.5"],
    "age": [b"count", b"1", b"reason", b"auth", b"object", b"AUTH", b"username", b"x", b"age-seconds", b"nan?"],
    "infinite": [b"count", b"1", b"reason", b"auth", b"object", b"AUTH", b"username", b"x", b"age-seconds", b"inf"],
    "ancient": [b"count", b"1", b"reason", b"auth", b"object", b"AUTH", b"username", b"x", b"age-seconds", b"1e300"],
    "created": [b"count", b"1", b"reason", b"auth", b"object", b"AUTH", b"username", b"x", b"age-seconds", b"1",
                b"entry-id", b"1", b"timestamp-created", b"-99999999999999999999", b"timestamp-last-updated", b"5"],
}


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


class LyingRedis:
    def __init__(self, lie: str):
        self.lie = lie
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                argv = []
                for _ in range(int(line[1:])):
                    size = int(f.readline()[1:])
                    argv.append(f.read(size + 2)[:-2])
                conn.sendall(self._reply([a.upper() for a in argv[:1]] + [a.lower() for a in argv[1:2]]))
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def _reply(self, argv: list[bytes]) -> bytes:
        name, arg = argv[0], argv[1] if len(argv) > 1 else b""
        if self.lie == "html":  # every command refused with an error that is Markdown, HTML and escapes
            return b"-ERR " + HTML + b"\r\n"
        if name in (b"AUTH", b"CLIENT"):
            return b"+OK\r\n"
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"INFO":
            body = {
                b"replication": b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n",
                b"server": b"# Server\r\nredis_version:7.2.4\r\nrun_id:lying\r\nuptime_in_seconds:100\r\n",
                b"cluster": b"# Cluster\r\ncluster_enabled:0\r\n",
            }.get(arg, b"# Stats\r\n")
            return _bulk(body)
        if name == b"CONFIG":
            return _array([_bulk(b"acllog-max-len"), _bulk(b"128")])
        if name == b"ACL" and arg == b"log":
            if self.lie == "string":
                return _bulk(b"not a list")
            return _array([_array([_bulk(x) for x in LIES[self.lie]])])
        if name == b"ACL":
            return _array([])
        return b"-ERR unknown command\r\n"
