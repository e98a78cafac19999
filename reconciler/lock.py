"""The apply lock: two applies never write to one instance at the same time.

The lock lives on the servers themselves, so it holds across processes and hosts and needs no
key space: before its first write, an apply opens one connection to every node it will write,
names it `reconciler-apply-<pid>-<random>` (CLIENT SETNAME), and only then lists each node's
clients (CLIENT LIST). Another connection with that prefix is another apply: this one releases
what it holds and refuses. Because every apply names its connections before it looks, of two
that start together at least one sees the other (both may, and both then refuse; neither
writes). The lock dies with its connections, so a killed apply never leaves a stale lock.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from .errors import ReconcilerError
from .model import Instance

PREFIX = "reconciler-apply-"


class LockError(ReconcilerError):
    """Another apply holds the instance, or the lock could not be taken."""


def _clients(reply: Any) -> list[dict[str, str]]:
    if isinstance(reply, list):  # redis-py parsed it
        return [{str(k): str(v) for k, v in entry.items()} for entry in reply]
    out = []
    for line in str(reply).splitlines():
        out.append(dict(part.split("=", 1) for part in line.split(" ") if "=" in part))
    return out


class InstanceLock:
    """Held from acquire() until release(); one connection per node."""

    def __init__(self, instance: Instance, addresses: list[str], connect: Callable[..., Any]):
        self.instance = instance
        self.addresses = sorted(set(addresses))
        self.connect = connect
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.clients: dict[str, Any] = {}

    def acquire(self) -> None:
        try:
            for address in self.addresses:
                client = self.connect(self.instance, address)
                self.clients[address] = client
                try:
                    client.execute_command("CLIENT", "SETNAME", self.name)
                except Exception as exc:
                    raise LockError(
                        f"{self.instance.name} {address}: cannot take the apply lock: CLIENT SETNAME refused ({exc}); "
                        "the admin user needs +client|setname and +client|list"
                    ) from None
            for address, client in self.clients.items():
                try:
                    listed = _clients(client.execute_command("CLIENT", "LIST"))
                except Exception as exc:
                    raise LockError(f"{self.instance.name} {address}: cannot check the apply lock: CLIENT LIST refused ({exc})") from None
                others = [c for c in listed if c.get("name", "").startswith(PREFIX) and c.get("name") != self.name]
                if others:
                    other = others[0]
                    raise LockError(
                        f"{self.instance.name} {address}: another apply is running on this instance "
                        f"(connection from {other.get('addr', '?')}, open {other.get('age', '?')} s); "
                        "wait for it to finish and plan again"
                    )
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for client in self.clients.values():
            try:
                client.close()
            except Exception:  # a dead connection holds nothing
                pass
        self.clients.clear()


class Locks:
    """Every instance of a plan, locked in file order; released together."""

    def __init__(self) -> None:
        self.held: list[InstanceLock] = []
        self.since = time.monotonic()

    def add(self, lock: InstanceLock) -> None:
        lock.acquire()
        self.held.append(lock)

    def release(self) -> None:
        for lock in self.held:
            lock.release()
        self.held.clear()

    def __enter__(self) -> "Locks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
