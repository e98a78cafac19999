"""Deadlines for node operations: the socket timeout bounds each read, not a whole reply, so every
connect, read, batch and discovery probe also runs under an overall deadline."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ...bounded import Abandoned, call_within
from ...errors import LiveError
from ...model import Instance

DEFAULT_TIMEOUT = 5.0


def _abort(client: Any) -> None:
    """Shut the client's sockets down: a blocked read returns at once (and fails)."""
    pool = getattr(client, "connection_pool", None)
    conns = list(getattr(pool, "_available_connections", ())) + list(getattr(pool, "_in_use_connections", ()))
    for conn in conns:
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass


@contextmanager
def deadline(client: Any, seconds: float, where: str, phase: str) -> Iterator[None]:
    """An overall deadline for one node operation. The socket timeout bounds each read, not the
    whole reply: a node that sends one byte now and then would hold a read forever without this.
    Raises LiveError `<where>: timed out after N s (<phase>)` when it fires."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        _abort(client)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        # The socket timeout is the same length: whichever fires first, the wait ran out.
        if fired.is_set() or isinstance(exc, (redis.TimeoutError, TimeoutError)):
            raise LiveError(f"{where}: timed out after {seconds:g} s ({phase})") from None
        raise
    finally:
        timer.cancel()


def resolve(host: str, port: int, seconds: float, where: str) -> list[str]:
    """The IP addresses of `host`, looked up under a deadline. getaddrinfo can't be interrupted
    and a resolver that never answers holds it for its own timeouts and retries (30 s and more):
    the lookup runs in a thread this one stops waiting for. An IP address is returned as it is."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = call_within(seconds, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), f"resolve {host}")
    except Abandoned:
        raise LiveError(f"{where}: timed out after {seconds:g} s (name resolution)") from None
    except OSError as exc:
        raise LiveError(f"{where}: cannot resolve {host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def timeout_of(instance: Instance | None) -> float:
    """The instance's timeout_seconds (DEFAULT_TIMEOUT without an instance)."""
    return float(instance.timeout_seconds or DEFAULT_TIMEOUT) if instance is not None else DEFAULT_TIMEOUT
