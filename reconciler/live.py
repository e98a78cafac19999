"""Live state reader: connect to every node of an instance as the admin user and read what
the planner needs in one pipelined round trip (plus the command table once per version)."""

from __future__ import annotations

import hashlib
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from .errors import LiveError
from .model import Instance
from .plan import fingerprint
from .state import InstanceState, LiveUser, NodeState

DEFAULT_TIMEOUT = 5.0
MAX_PARALLEL_NODES = 8

# Command tables read off live nodes, by name, so one plan reads each version once.
_TABLES: dict[str, Any] = {}


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or "invalid username-password" in str(exc):
        return "AUTH failed"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, redis.TimeoutError):
        return f"timed out ({text})"
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verification failed: {text}"
    return text


def connect(instance: Instance, address: str, *, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """An authenticated admin connection to one node; raises LiveError naming instance and node."""
    host, port = split_address(address)
    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "protocol": 2,
    }
    admin = instance.admin
    if admin.secret is not None:
        kwargs["username"] = admin.username
        kwargs["password"] = admin.secret.reveal()
    elif admin.username and admin.username != "default":
        kwargs["username"] = admin.username
    if instance.tls is not None:
        tls = instance.tls
        kwargs.update(
            ssl=True,
            ssl_ca_certs=tls.ca_file,
            ssl_certfile=tls.cert_file,
            ssl_keyfile=tls.key_file,
            ssl_cert_reqs="required",
            ssl_check_hostname=bool(tls.server_name),
        )
        if tls.server_name:
            kwargs["host"] = host
    client = redis.Redis(**kwargs)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        who = f" for user {admin.username}" if "AUTH" in _describe_error(exc) else ""
        raise LiveError(f"{instance.name} {address}: {_describe_error(exc)}{who}") from None
    except OSError as exc:
        client.close()
        raise LiveError(f"{instance.name} {address}: {_describe_error(exc)}") from None
    return client


def _parse_info(text: str | dict) -> dict[str, str]:
    if isinstance(text, dict):  # redis-py's INFO callback already parsed it
        return {k: str(v) for k, v in text.items()}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _connections_by_user(client_list: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    if isinstance(client_list, list):  # redis-py parses CLIENT LIST into dicts
        for entry in client_list:
            name = entry.get("user")
            if name:
                counts[name] = counts.get(name, 0) + 1
        return counts
    for line in client_list.splitlines():
        for field in line.split(" "):
            if field.startswith("user="):
                name = field[5:]
                counts[name] = counts.get(name, 0) + 1
                break
    return counts


def _config_value(reply: Any, key: str) -> str | None:
    if isinstance(reply, dict):
        value = reply.get(key)
    elif isinstance(reply, list) and len(reply) >= 2:
        value = reply[1]
    else:
        value = None
    return value if value else None


def acl_fingerprint(client: redis.Redis) -> str:
    return fingerprint(list(client.execute_command("ACL", "LIST")))


def _command_table(client: redis.Redis, server: str, version: str) -> str:
    from .acl import CommandTable

    name = f"{server}-{version}"
    if name not in _TABLES:
        try:
            _TABLES[name] = CommandTable.bundled(name)
        except KeyError:
            _TABLES[name] = CommandTable.read(client, server, version)
    return name


def tables() -> dict[str, Any]:
    """Command tables read so far in this process, by NodeState.command_table name."""
    return dict(_TABLES)


def read_node(instance: Instance, address: str, client: redis.Redis | None = None) -> NodeState:
    from .acl import parse_acl_list_line

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
        info_server, info_repl, acl_list, whoami, aclfile, client_list, tac, tacu = pipe.execute(
            raise_on_error=False
        )
        for reply, what in ((acl_list, "ACL LIST"), (info_server, "INFO"), (whoami, "ACL WHOAMI")):
            if isinstance(reply, Exception):
                raise LiveError(f"{instance.name} {address}: {what} refused: {reply}")
        info = _parse_info(info_server)
        server = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version", "0.0.0")
        repl = {} if isinstance(info_repl, Exception) else _parse_info(info_repl)
        conns = {} if isinstance(client_list, Exception) else _connections_by_user(client_list)
        users: dict[str, LiveUser] = {}
        for line in acl_list:
            name, enabled, nopass, hashes, rules = parse_acl_list_line(line)
            users[name] = LiveUser(name, enabled, nopass, hashes, rules, conns.get(name, 0))
        admin_hash = None
        if instance.admin.secret is not None:
            admin_hash = hashlib.sha256(instance.admin.secret.reveal().encode()).hexdigest()
        tls_on = instance.tls is not None
        return NodeState(
            address=address,
            server=server,
            version=version,
            role="replica" if repl.get("role") == "slave" else "primary",
            users=users,
            command_table=_command_table(client, server, version),
            aclfile=None if isinstance(aclfile, Exception) else _config_value(aclfile, "aclfile"),
            config_file=bool(info.get("config_file")),
            tls_auth_clients=None if isinstance(tac, Exception) else _config_value(tac, "tls-auth-clients"),
            tls_auth_clients_user=None if isinstance(tacu, Exception) else _config_value(tacu, "tls-auth-clients-user"),
            admin_user=str(whoami),
            admin_hash=admin_hash,
            tls=tls_on,
        )
    except redis.RedisError as exc:
        raise LiveError(f"{instance.name} {address}: {_describe_error(exc)}") from None
    finally:
        if own:
            client.close()


def read_instance(instance: Instance) -> InstanceState:
    nodes = list(instance.nodes)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_NODES, max(1, len(nodes)))) as pool:
        states = list(pool.map(lambda a: read_node(instance, a), nodes))
    replicas = sum(1 for n in states if n.role == "replica")
    topology = "replicated" if replicas else "standalone"
    return InstanceState(name=instance.name, nodes=tuple(states), topology=topology)
