"""One Memorystore for Valkey instance as the planner's live state (MSNode): its token-auth users
and their tokens, each named by the record's file token id where apply recorded it (the
service names tokens itself), and the instance's authorization mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ... import acl
from ...model import DesiredState, Instance, server_token_ref
from ...state import InstanceState, LiveUser, NodeState
from .. import managed
from .client import connect, last, pages

NAME = "memorystore"
TOKEN_AUTH = "TOKEN_AUTH"  # Instance.authorizationMode for basic token-based authentication
MODE_PARAMETER = "authorizationMode"


@dataclass(frozen=True)
class MSNode(NodeState):
    resource: str = ""
    engine: str = ""
    authorization_mode: str = ""
    token_ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # user -> {stand-in hash: service name}
    unrecorded: tuple[str, ...] = ()  # file users with service tokens the record has no names for

    @property
    def label(self) -> str:
        return f"Memorystore for Valkey {self.engine or self.version}"


def _version(engine: str) -> str:
    """"VALKEY_8_0" -> "8.0"."""
    parts = [p for p in engine.split("_") if p.isdigit()]
    return ".".join(parts[:2]) if parts else "8.0"


def read_instance(desired: DesiredState, instance: Instance) -> InstanceState:
    assert instance.api is not None and instance.api.instance
    resource = instance.api.instance
    http = connect(instance)
    try:
        inst = http.get_existing(f"/v1/{resource}", f"{instance.name}: Memorystore instance {resource} does not exist (api.instance)",
                                 "an Instance object")
        users: dict[str, LiveUser] = {}
        ids: dict[str, dict[str, str]] = {}
        record = managed.load_record(desired.source, NAME).get(instance.name, {})
        unrecorded: list[str] = []
        for u in pages(http, f"/v1/{resource}/tokenAuthUsers", "tokenAuthUsers"):
            name = last(u.get("name", ""))
            tokens = token_refs(name, pages(http, f"/v1/{u['name']}/authTokens", "authTokens"), record.get(name) or {})
            ids[name] = tokens
            if tokens and not record.get(name) and any(d.name == name for d in desired.users_for(instance.name)):
                unrecorded.append(name)
            users[name] = LiveUser(name=name, enabled=True, nopass=False, hashes=tuple(sorted(tokens)), rules="")
    finally:
        http.close()
    engine = str(inst.get("engineVersion") or "VALKEY_8_0")
    version = _version(engine)
    return InstanceState(
        name=instance.name,
        nodes=(
            MSNode(
                address=resource,
                server="valkey",
                version=version,
                users=users,
                command_table=acl.CommandTable.nearest("valkey", version).name,
                admin_user="",
                tls=True,
                resource=resource,
                engine=engine,
                authorization_mode=str(inst.get("authorizationMode") or ""),
                token_ids=ids,
                unrecorded=tuple(unrecorded),
            ),
        ),
        topology="standalone",
    )


def token_refs(user: str, listed: list[dict], known: Mapping[str, str]) -> dict[str, str]:
    """{stand-in hash: service token name} for a user's listed tokens; `known` (the record) maps
    the file's token ids to service names, and an unknown name stands for itself."""
    by_name = {v: k for k, v in known.items()}
    out = {}
    for t in listed:
        service = last(t.get("name", ""))
        out[server_token_ref(user, by_name.get(service, service))] = service
    return out


