"""Live state reader: connect to every node of an instance as the admin user and read what
the planner needs in one pipelined round trip (plus the command table once per version)."""

from __future__ import annotations

import errno
import hashlib
import os
import ssl
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ... import addresses, lock
from ...acl.table import CommandTable
from ...errors import LiveError
from ...model import Admin, Instance
from ...state import InstanceState, LiveUser, NodeState
from . import sentinel, topology
from .deadline import deadline, resolve, timeout_of

MAX_PARALLEL_NODES = 8

# Command tables read off live nodes, by name, so one plan reads each version once.


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


# OpenSSL texts -> what failed, in words an operator can act on. Checked in order.
_TLS_FAILURES = (
    ("hostname mismatch", "TLS: hostname mismatch: the server certificate is not valid for {name}"),
    ("ip address mismatch", "TLS: hostname mismatch: the server certificate is not valid for {name}"),
    ("certificate has expired", "TLS: the server certificate has expired"),
    ("certificate is not yet valid", "TLS: the server certificate is not valid yet"),
    ("unable to get local issuer certificate", "TLS: unknown CA: the server certificate is not signed by a CA in {ca}"),
    ("self-signed certificate", "TLS: unknown CA: the server certificate is not signed by a CA in {ca}"),
    ("self signed certificate", "TLS: unknown CA: the server certificate is not signed by a CA in {ca}"),
    ("certificate signature failure", "TLS: unknown CA: the server certificate is not signed by a CA in {ca}"),
    ("alert certificate expired", "TLS: the server refused our client certificate {cert}: it has expired"),
    ("alert unknown ca", "TLS: the server refused our client certificate {cert}: unknown CA (not signed by the server's tls-ca-cert-file)"),
    ("alert bad certificate", "TLS: the server refused our client certificate {cert}"),
    ("alert decrypt error", "TLS: the server refused our client certificate {cert} (signature does not verify: not signed by a CA in its tls-ca-cert-file?)"),
    ("alert certificate required", "TLS: the server requires a client certificate (tls-auth-clients yes); set tls.cert_file and tls.key_file"),
    ("wrong version number", "TLS: the server did not answer TLS (is this a plain-text port?)"),
    # TLS 1.3: the server's verdict on our certificate may arrive as a plain close.
    ("eof occurred in violation of protocol", "TLS: the server closed the connection during the handshake: it refused our client certificate {cert} (not signed by a CA in its tls-ca-cert-file?)"),
)


def _describe_tls(text: str, instance: Instance | None, address: str) -> str | None:
    low = text.lower()
    tls = instance.tls if instance is not None else None
    name = (tls.server_name if tls and tls.server_name else split_address(address)[0]) if address else "the node"
    ca = (tls.ca_file if tls and tls.ca_file else "the system trust store")
    cert = (tls.cert_file if tls and tls.cert_file else "(none)")
    if "eof occurred in violation of protocol" in low and not (tls and tls.cert_file):
        low = "alert certificate required"  # no certificate of ours to refuse: it wants one
    for needle, message in _TLS_FAILURES:
        if needle in low:
            return message.format(name=name, ca=ca, cert=cert) + f" ({text.strip()})"
    if "certificate_verify_failed" in low:
        return f"TLS verification failed: {text}"
    return None


def describe_error(exc: BaseException, instance: Instance | None = None, address: str = "") -> str:
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or "invalid username-password" in str(exc):
        return "AUTH failed"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, redis.exceptions.InvalidResponse) or text.startswith("Protocol Error"):
        # An HTTP server, an SSH daemon, a database of another kind: say so, with what it answered.
        answer = text.removeprefix("Protocol Error: ")
        return f"does not speak the Redis protocol (it answered {answer[:80]}); is this the right host and port?"
    tls = _describe_tls(text, instance, address)
    if tls is not None:
        return tls
    if isinstance(exc, redis.TimeoutError):
        return f"timed out ({text})"
    return text


def auth_hint(admin: Admin) -> str:
    """Where the secret came from and what to try, for an AUTH failure of the admin connection."""
    if admin.secret is None:
        return (
            " (no admin secret in the file: this server wants a password; set admin.secret, or for a first run "
            "`reconciler apply --bootstrap --bootstrap-secret-env VAR` with `default`'s password in VAR)"
        )
    kind, _, name = admin.source.partition(":")
    origin = f" with the secret from {{{kind}: {name}}}" if name else ""
    if admin.username == "default":
        return f"{origin}; check that it holds `default`'s current password"
    return (
        f"{origin}; on a fresh server the user does not exist yet: `reconciler apply -f FILE --bootstrap` creates it "
        "(add --bootstrap-secret-env VAR when `default` has a password)"
    )


class _NamedSSLConnection(redis.connection.SSLConnection):
    """SSLConnection that checks the server certificate against `tls.server_name` (and sends it
    as SNI) instead of the address it connects to; redis-py uses the host for both."""

    def __init__(self, *args: Any, ssl_server_name: str | None = None, **kwargs: Any):
        self.ssl_server_name = ssl_server_name
        super().__init__(*args, **kwargs)

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        if not self.ssl_server_name:
            return super()._wrap_socket_with_ssl(sock)
        host, self.host = self.host, self.ssl_server_name
        try:
            return super()._wrap_socket_with_ssl(sock)
        finally:
            self.host = host


def _tls_files_problem(instance: Instance) -> str | None:
    """Checks we can make before connecting: files readable, our own certificate in date."""
    from ... import certs

    tls = instance.tls
    assert tls is not None
    for what, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if path and not os.path.isfile(path):
            return f"TLS: tls.{what} {path} cannot be read"
    if bool(tls.cert_file) != bool(tls.key_file):
        return "TLS: tls.cert_file and tls.key_file go together"
    if tls.cert_file:
        try:
            info = certs.inspect(tls.cert_file)
        except certs.CertError as exc:
            return f"TLS: tls.cert_file: {exc}"
        now = datetime.now(timezone.utc)
        if info.not_after < now:
            return f"TLS: our client certificate {tls.cert_file} has expired (not after {info.not_after:%Y-%m-%d %H:%M} UTC); servers refuse it"
        if info.not_before > now:
            return f"TLS: our client certificate {tls.cert_file} is not valid yet (not before {info.not_before:%Y-%m-%d %H:%M} UTC)"
    return None


def connect(instance: Instance, address: str, *, timeout: float | None = None) -> redis.Redis:
    """An authenticated admin connection to one node; raises LiveError naming instance and node.

    timeout: per read, for the name lookup and for the whole handshake (default: the instance's
    timeout_seconds). A host name is looked up once, under that deadline, and its addresses are
    tried in order (`localhost` may be ::1 first for a server bound to 127.0.0.1)."""
    timeout = timeout or timeout_of(instance)
    host, port = split_address(address)
    where = f"{instance.name} {address}"
    if instance.tls is not None:
        problem = _tls_files_problem(instance)
        if problem:
            raise LiveError(f"{where}: {problem}")
    ips = resolve(host, port, timeout, where)
    for i, ip in enumerate(ips):
        try:
            return _connect_to(instance, address, ip, timeout)
        except _Unreachable as exc:
            if i + 1 == len(ips):
                raise LiveError(str(exc)) from None
    raise LiveError(f"{where}: {host} has no address")


class _Unreachable(Exception):
    """Nothing answered at this IP address: the next address of the host name may."""


def _connect_to(instance: Instance, address: str, ip: str, timeout: float) -> redis.Redis:
    host, port = split_address(address)
    kwargs: dict[str, Any] = {
        "host": ip,
        "port": port,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        # Names are any bytes but ASCII spaces: bytes that are not UTF-8 decode to surrogates
        # and encode back to the same bytes, so such a user can be read, shown and deleted.
        "encoding_errors": "surrogateescape",
        "protocol": 2,
        # No silent retries: redis-py's default (3, with backoff) spends ~3 s on every refused
        # connection and would re-send writes the executor must report as in doubt.
        "retry": Retry(NoBackoff(), 0),
    }
    admin = instance.admin
    if admin.secret is not None:
        kwargs["username"] = admin.username
        kwargs["password"] = admin.secret.reveal()
    elif admin.username and admin.username != "default":
        kwargs["username"] = admin.username
    if instance.tls is not None:
        tls = instance.tls
        # rediss:// semantics: verify the chain and the name (tls.server_name, else the node's host).
        pool = redis.ConnectionPool(
            connection_class=_NamedSSLConnection,
            ssl_ca_certs=tls.ca_file,
            ssl_certfile=tls.cert_file,
            ssl_keyfile=tls.key_file,
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            ssl_server_name=tls.server_name or host,
            **kwargs,
        )
        client = redis.Redis.from_pool(pool)  # closing the client closes the pool
    else:
        client = redis.Redis(**kwargs)
    try:
        with deadline(client, timeout, f"{instance.name} {address}", "connect"):
            client.ping()
    except LiveError:
        client.close()
        raise
    except redis.RedisError as exc:
        client.close()
        why = describe_error(exc, instance, address)
        if ip != host and _refused(exc):
            raise _Unreachable(f"{instance.name} {address}: {why}") from None
        if why == "AUTH failed":
            why += f" for user {admin.username}{auth_hint(admin)}"
        raise LiveError(f"{instance.name} {address}: {why}") from None
    except (OSError, ssl.SSLError) as exc:
        client.close()
        raise LiveError(f"{instance.name} {address}: {describe_error(exc, instance, address)}") from None
    return client


def _refused(exc: BaseException) -> bool:
    """Nothing listens at that address (as opposed to a server that answered: AUTH, TLS, ...)."""
    text = str(exc)
    return isinstance(exc, redis.ConnectionError) and not isinstance(exc, redis.AuthenticationError) and any(
        f"Error {n} " in text for n in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
    )


def _info_text(reply: Any) -> dict[str, str]:
    return {k: str(v) for k, v in topology.parse_info(reply).items()}


def _connections_by_user(clients: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in clients:
        name = entry.get("user")
        if name:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _config_value(reply: Any, key: str) -> str | None:
    if isinstance(reply, dict):
        value = reply.get(key)
    elif isinstance(reply, list) and len(reply) >= 2:
        value = reply[1]
    else:
        value = None
    return value if value else None


def _command_table(client: redis.Redis, server: str, version: str, cache: dict[str, CommandTable]) -> tuple[str, CommandTable | None]:
    """(name, the table read off the node, or None when a bundled table has the name). `cache`:
    tables already read in this read of the instance (nodes of one version share one)."""
    name = f"{server}-{version}"
    try:
        CommandTable.bundled(name)
        return name, None
    except KeyError:
        pass
    if name not in cache:
        cache[name] = CommandTable.read(client, server, version)
    return name, cache[name]


def _sentinel_table(client: redis.Redis, server: str, version: str, cache: dict[str, CommandTable]) -> tuple[str, CommandTable]:
    """A sentinel's own command table (SENTINEL, ACL, AUTH, ...), read off the sentinel: rules of
    sentinel_users are checked against what a sentinel runs, not a data node's table."""
    name = f"{server}-sentinel-{version}"
    if name not in cache:
        t = CommandTable.read(client, server, version)
        cache[name] = CommandTable(name, t.server, t.version, t.categories, t.commands)
    return name, cache[name]


def read_node(
    instance: Instance,
    address: str,
    client: redis.Redis | None = None,
    role: str | None = None,
    *,
    only: frozenset[str] | None = None,
    tables: dict[str, CommandTable] | None = None,
) -> NodeState:
    """Everything the planner needs from one node.

    role: "sentinel" for a sentinel (discovery knows; INFO of a sentinel has no replication role).
    only: parse just these users' ACL lines (verification after apply compares the touched
    users, not the whole node).
    tables: command tables read off other nodes of this instance so far (shared, filled in).
    """
    from ...acl import parse_acl_list_line

    own = client is None
    if client is None:
        client = connect(instance, address)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("INFO", "server")
        pipe.execute_command("INFO", "replication")
        pipe.execute_command("ACL", "LIST")
        pipe.execute_command("ACL", "WHOAMI")
        pipe.execute_command("CONFIG", "GET", "aclfile")
        pipe.execute_command("CLIENT", "LIST")
        pipe.execute_command("CONFIG", "GET", "tls-auth-clients")
        pipe.execute_command("CONFIG", "GET", "tls-auth-clients-user")
        with deadline(client, timeout_of(instance), f"{instance.name} {address}", "read"):
            info_server, info_repl, acl_list, whoami, aclfile, client_list, tac, tacu = pipe.execute(
                raise_on_error=False
            )
        for reply, what in ((acl_list, "ACL LIST"), (info_server, "INFO"), (whoami, "ACL WHOAMI")):
            if isinstance(reply, Exception):
                raise LiveError(f"{instance.name} {address}: {what} refused: {reply}")
        info = _info_text(info_server)
        server = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version", "0.0.0")
        repl = {} if isinstance(info_repl, Exception) else _info_text(info_repl)
        clients = [] if isinstance(client_list, Exception) else lock.parse_clients(client_list)
        conns = _connections_by_user(clients)
        users: dict[str, LiveUser] = {}
        for line in acl_list:
            if only is not None and _acl_line_user(line) not in only:
                continue
            name, enabled, nopass, hashes, rules = parse_acl_list_line(line)
            users[name] = LiveUser(name, enabled, nopass, hashes, rules, conns.get(name, 0))
        impostors = lock.impostors(clients, {str(whoami), *lock.owners_of(instance)})
        admin_hash = None
        if instance.admin.secret is not None:
            admin_hash = hashlib.sha256(instance.admin.secret.reveal().encode()).hexdigest()
        tls_on = instance.tls is not None
        resolved = _peer(client)
        cache = tables if tables is not None else {}
        with deadline(client, timeout_of(instance), f"{instance.name} {address}", "command table"):
            table_name, table = (
                _sentinel_table(client, server, version, cache) if role == "sentinel" else _command_table(client, server, version, cache)
            )
        return NodeState(
            address=address,
            server=server,
            version=version,
            role=role or ("replica" if repl.get("role") == "slave" else "primary"),
            users=users,
            command_table=table_name,
            aclfile=None if isinstance(aclfile, Exception) else _config_value(aclfile, "aclfile"),
            aclfile_known=not isinstance(aclfile, Exception),
            config_file=bool(info.get("config_file")),
            tls_auth_clients=None if isinstance(tac, Exception) else _config_value(tac, "tls-auth-clients"),
            tls_auth_clients_user=None if isinstance(tacu, Exception) else _config_value(tacu, "tls-auth-clients-user"),
            admin_user=str(whoami),
            admin_hash=admin_hash,
            tls=tls_on,
            lock_impostors=tuple(f"user {c.get('user', '?')} from {c.get('addr', '?')} ({c.get('name')})" for c in impostors),
            resolved=resolved,
            run_id=str(info.get("run_id", "")),
            table=table,
        )
    except redis.RedisError as exc:
        raise LiveError(f"{instance.name} {address}: {describe_error(exc, instance, address)}") from None
    finally:
        if own:
            client.close()


def _peer(client: redis.Redis) -> str:
    """The address the client's connection reached (its socket's peer), "" when unknown."""
    pool = client.connection_pool
    try:
        conn = pool.get_connection()
    except (redis.RedisError, OSError):
        return ""
    try:
        return addresses.peer(getattr(conn, "_sock", None))
    finally:
        pool.release(conn)


def _acl_line_user(line: str | bytes) -> str:
    # "user <name> on ..." -- names have no spaces.
    text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
    return text.split(" ", 2)[1] if text.startswith("user ") else ""


def read_instance(instance: Instance) -> InstanceState:
    """Discover the instance's nodes (reconciler.topology), then read them all in parallel,
    reusing discovery's connections."""
    from ... import progress

    find = sentinel.discover if instance.topology == "sentinel" else topology.discover
    topo, clients = find(instance, connect=connect, workers=MAX_PARALLEL_NODES)
    nodes = list(topo.nodes)
    sentinels = {m.address for m in topo.members if m.role == "sentinel"}
    tick = progress.counter(f"read {instance.name}", f"reading {instance.name}", len(nodes), "nodes")
    tables: dict[str, CommandTable] = {}  # nodes of one version read its table once

    def read_one(address: str) -> NodeState:
        if address in sentinels:
            state = read_node(instance.for_role("sentinel"), address, clients[address], role="sentinel", tables=tables)
        else:
            state = read_node(instance, address, clients[address], tables=tables)
        tick()
        return state

    try:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_NODES, max(1, len(nodes)))) as pool:
            states = list(pool.map(read_one, nodes))
    finally:
        for client in clients.values():
            client.close()
    return InstanceState(name=instance.name, nodes=tuple(states), topology=topo.kind)
