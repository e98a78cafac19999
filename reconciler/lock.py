"""The apply lock: two applies never write to one instance at the same time.

The lock lives on the servers themselves, so it holds across processes and hosts and needs no
key space: before its first write, an apply opens one connection to every node it will write,
names it `reconciler-apply-<pid>-<random>` (CLIENT SETNAME), and only then lists each node's
clients (CLIENT LIST). Another connection with that prefix, authenticated as the instance's
admin user, is another apply: this one releases what it holds and refuses. Because every apply
names its connections before it looks, of two that start together at least one sees the other
(both may, and both then refuse; neither writes). The lock dies with its connections, so a
killed apply never leaves a stale lock.

Any user may name its connection (CLIENT SETNAME needs no special right), so a connection with
the prefix counts only when CLIENT LIST says it is authenticated as the admin user (`user=`), or
by a user that may change users (ACL DRYRUN says so: another file's apply with another admin
login); others are ignored here and reported by the plan (state.NodeState.lock_impostors).

While held, every lock connection is kept alive (a PING every KEEPALIVE_SECONDS) so a server's
`timeout` never closes it, and the executor asks `check()` before each write batch: a lock
connection that died (killed, timed out, the node restarted) stops the apply before it writes
more. The executor names its own connection like the lock and never kills a connection with
this name (see providers/redis/kills.py), so revoking the admin's own token keeps the lock.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import LiveError, ReconcilerError
from .model import Instance

PREFIX = "reconciler-apply-"
# Servers close idle clients after `timeout` seconds (1 at least) and check once a second; a
# PING twice a second keeps the lock connection busy enough for any setting, for two commands a
# second per node.
KEEPALIVE_SECONDS = 0.5


class LockError(ReconcilerError):
    """Another apply holds the instance, or the lock could not be taken."""


def parse_clients(reply: Any) -> list[dict[str, str]]:
    """CLIENT LIST as one dict per connection (`id`, `addr`, `name`, `user`, ...)."""
    if isinstance(reply, list):  # redis-py parsed it
        return [{str(k): str(v) for k, v in entry.items()} for entry in reply]
    # One client per "\n"-ended line, fields split on " ": str.splitlines() would also split
    # inside a user name holding U+2028 or U+0085.
    return [dict(part.split("=", 1) for part in line.split(" ") if "=" in part) for line in str(reply).split("\n") if line]


def is_lock_name(name: str) -> bool:
    return name.startswith(PREFIX)


def impostors(clients: list[dict[str, str]], owners: Iterable[str]) -> list[dict[str, str]]:
    """Connections named like the apply lock by a user that is not the admin: they are no lock."""
    allowed = set(owners)
    return [c for c in clients if is_lock_name(c.get("name", "")) and c.get("user", "") not in allowed]


def owners_of(instance: Instance) -> set[str]:
    """The users whose lock-named connections on this instance are an apply."""
    return {instance.admin.username or "default", *instance.lock_users}


# The locks this process holds, by (instance, node address): the executor asks them.
_HELD: dict[tuple[str, str], "InstanceLock"] = {}
_HELD_GUARD = threading.Lock()


def held(instance: str, address: str) -> "InstanceLock | None":
    """The lock this process holds on that node, if any."""
    with _HELD_GUARD:
        return _HELD.get((instance, address))


def own_names() -> set[str]:
    """The names of every lock connection this process holds: kills never close them."""
    with _HELD_GUARD:
        return {lock.name for lock in _HELD.values()}


class InstanceLock:
    """Held from acquire() until release(); one connection per node.

    Named connections of the user this lock connects as, and of `instance.lock_users`, are
    applies (`apply --bootstrap` adds the file's admin while its step 1 connects as `default`).
    Each node's lock is one connection taken out of its client's pool and used directly: a
    redis-py client reconnects on its own, and a fresh, unnamed connection would pass for the
    lock. Once any command on it fails, it is never used again.
    """

    def __init__(self, instance: Instance, addresses: list[str], connect: Callable[..., Any]):
        self.instance = instance
        self.addresses = sorted(set(addresses))
        self.connect = connect
        self.owners = owners_of(instance)
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.clients: dict[str, Any] = {}  # address -> its redis client (the deadline aborts through it)
        self.conns: dict[str, Any] = {}  # address -> the lock connection itself
        self.lost: dict[str, str] = {}  # address -> why its lock connection is gone
        self._guards: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def _call(self, address: str, phase: str, *command: str) -> Any:
        """One command on the node's lock connection, under the instance's deadline."""
        from .providers.redis.deadline import deadline, timeout_of

        conn = self.conns[address]
        with deadline(self.clients[address], timeout_of(self.instance), f"{self.instance.name} {address}", phase):
            conn.send_command(*command)
            return conn.read_response()

    def acquire(self) -> None:
        try:
            for address in self.addresses:
                client = self.connect(self.instance, address)
                self.clients[address] = client
                self.conns[address] = client.connection_pool.get_connection()
                self._guards[address] = threading.Lock()
                try:
                    self._call(address, "apply lock: CLIENT SETNAME", "CLIENT", "SETNAME", self.name)
                except LiveError:
                    raise
                except Exception as exc:
                    raise LockError(
                        f"{self.instance.name} {address}: cannot take the apply lock: CLIENT SETNAME refused ({exc}); "
                        "the admin user needs +client|setname and +client|list"
                    ) from None
            for address in self.addresses:
                try:
                    listed = parse_clients(self._call(address, "apply lock: CLIENT LIST", "CLIENT", "LIST"))
                except LiveError:
                    raise
                except Exception as exc:
                    raise LockError(f"{self.instance.name} {address}: cannot check the apply lock: CLIENT LIST refused ({exc})") from None
                others = [
                    c for c in listed
                    if is_lock_name(c.get("name", "")) and c.get("name") != self.name
                    and (c.get("user", "") in self.owners or self._writes_users(address, c.get("user", "")))
                ]
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
        with _HELD_GUARD:
            for address in self.clients:
                _HELD[(self.instance.name, address)] = self
        self._keeper = threading.Thread(target=self._keep_alive, name=f"lock {self.instance.name}", daemon=True)
        self._keeper.start()

    def _writes_users(self, address: str, user: str) -> bool:
        """Whether `user` may change this node's users (ACL DRYRUN, Redis 7+ and Valkey): then its
        lock-named connection is an apply of another file with another admin login, which writes
        this node too. Where DRYRUN is missing or refused, only the instance's own admin counts."""
        try:
            reply = self._call(address, "apply lock: ACL DRYRUN", "ACL", "DRYRUN", user, "ACL", "SETUSER", f"{PREFIX}probe")
        except LiveError:
            raise
        except Exception:  # noqa: BLE001 - no DRYRUN, not allowed it, or the user is gone: not an apply
            return False
        return reply in (b"OK", "OK")

    def check(self, address: str) -> str | None:
        """None while this node's lock connection is open (a PING answers); else why it is not."""
        if address not in self.conns:
            return f"no lock connection to {address}"
        with self._guards[address]:
            if address in self.lost:
                return self.lost[address]
            try:
                self._call(address, "apply lock: PING", "PING")
            except Exception as exc:  # noqa: BLE001 - any failure means the lock is gone; the text says why
                self.lost[address] = str(exc) or type(exc).__name__
                return self.lost[address]
        return None

    def _keep_alive(self) -> None:
        while not self._stop.wait(KEEPALIVE_SECONDS):
            for address in list(self.conns):
                if self._stop.is_set():
                    return
                self.check(address)

    def release(self) -> None:
        self._stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join()
        with _HELD_GUARD:
            for address in self.clients:
                if _HELD.get((self.instance.name, address)) is self:
                    del _HELD[(self.instance.name, address)]
        for conn in self.conns.values():
            try:
                conn.disconnect()
            except Exception:  # a dead connection holds nothing
                pass
        for client in self.clients.values():
            try:
                client.close()
            except Exception:  # a dead connection holds nothing
                pass
        self.conns.clear()
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
