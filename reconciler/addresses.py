"""One server, many spellings: `localhost:6379`, `127.0.0.1:6379`, `[::ffff:127.0.0.1]:6379`.

A node belongs to one instance, and the record of unfinished work must find its node again
when the file spells it differently. Without network (validate), spellings that can only mean
the same server are equal: IP literals in any form, host names in any case or with a trailing
dot, and `localhost` (RFC 6761: always the loopback addresses). With the servers (plan), a node
is the address its connection reached (`NodeState.resolved`, the socket's peer) and the server
process it found (`NodeState.run_id`): the same either way is the same server.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

LOOPBACK = ("127.0.0.1", "::1")


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def canonical_ip(host: str) -> str | None:
    """The IP's one spelling (IPv4-mapped IPv6 as IPv4), or None for a host name."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def join(host: str, port: int | str) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@functools.lru_cache(maxsize=4096)
def spellings(address: str) -> frozenset[str]:
    """Every canonical `host:port` this spelling certainly names, without any lookup."""
    host, port = _host_port(address)
    ip = canonical_ip(host)
    if ip is not None:
        return frozenset({join(ip, port)})
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return frozenset(join(ip, port) for ip in LOOPBACK)
    return frozenset({join(name, port)})


def same_node(a: str, b: str) -> bool:
    """Whether two spellings certainly name the same node (no network)."""
    return bool(spellings(a) & spellings(b))


def peer(sock: Any) -> str:
    """`ip:port` of the server end of a connected socket, or "" when it can't be told."""
    try:
        name = sock.getpeername()
    except (OSError, AttributeError):
        return ""
    ip = canonical_ip(str(name[0]))
    return join(ip or str(name[0]), name[1])


def shared_servers(nodes: Iterable[tuple[str, str, str, str]]) -> list[str]:
    """One problem per server that two instances both list. `nodes`: (instance, address as the
    file or discovery spells it, resolved address, run_id); empty identities are not compared."""
    owner: dict[tuple[str, str], tuple[str, str]] = {}
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    for instance, address, resolved, run_id in nodes:
        for key in (("resolved", resolved), ("run_id", run_id)):
            if not key[1]:
                continue
            first = owner.setdefault(key, (instance, address))
            if first[0] != instance and frozenset((first[0], instance)) not in reported:
                reported.add(frozenset((first[0], instance)))
                how = f"both reach {resolved}" if key[0] == "resolved" else "are the same server (one run_id)"
                problems.append(
                    f"instances {first[0]} ({first[1]}) and {instance} ({address}) {how}: a node belongs to one instance; "
                    "list it in one of them"
                )
    return problems
