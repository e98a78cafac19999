"""One Redis Software database as the planner's live state (RSNode): its users (cluster-management
users left out), the Redis ACL each user's role binds on the database, which passwords the
record says apply set (the API never returns them), and the cluster's mTLS settings when the
file has certificate users."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ... import acl
from ...model import DesiredState, Instance
from ...names import printable
from ...state import InstanceState, LiveUser, NodeState
from .. import managed
from ..http import Client
from . import versions
from .client import connect

NAME = "redis-software"
PREFIX = "reconciler-"  # names of the redis_acl and role made for each user
UNKNOWN = "0" * 64  # stands for "passwords the reconciler did not set" in live hashes
DEFAULT = "default"
TRUSTED_CA = "mtls_trusted_ca_cert"  # requests/cluster/certificates: key of the mTLS CA


@dataclass(frozen=True)
class RSNode(NodeState):
    """The database as one node, plus what the planner's NodeState has no field for."""

    database: int = 0
    subjects: Mapping[str, str] = field(default_factory=dict)  # user -> certificate_subject_line
    auth_methods: Mapping[str, str] = field(default_factory=dict)  # user -> auth_method
    software: str = ""  # the cluster's (oldest node's) software_version
    admin_can_add: bool = True  # versions.PasswordApi.admin_can_add
    # Cluster mTLS settings, read when the file has certificate users (else None):
    mtls: bool | None = None  # cluster mtls_certificate_authentication
    subject_validation: str | None = None  # cluster mtls_client_cert_subject_validation_type
    trusted_ca: bool | None = None  # an mtls_trusted_ca certificate is installed
    database_mtls: bool | None = None  # bdb tls_mode enabled and enforce_client_authentication

    @property
    def label(self) -> str:
        return f"Redis Software {self.software or '?'} database {self.database}, Redis {self.version}"


def same_subject(a: str, b: str) -> bool:
    """Distinguished names compared parsed (RFC 2253 / 4514): `CN=a, OU=b` is `CN=a,OU=b`."""
    from ...config.core import parse_subject

    pa, pb = parse_subject(a or ""), parse_subject(b or "")
    if pa is None or pb is None:
        return (a or "") == (b or "")
    return pa == pb


def listed(http: Client, path: str) -> list[dict]:
    """Users, roles or Redis ACLs (objects/user, role, redis_acl: integer uid, string name)."""
    return http.listing(path, None, {"uid": int, "name": str})


def software_version(http: Client) -> str:
    """The cluster's software_version (objects/node), the oldest node's: which password calls it takes
    depends on it (versions.py)."""
    nodes = http.listing("/v1/nodes", None, {})
    return versions.lowest([printable(str(n.get("software_version") or "")) for n in nodes])


def read_database(desired: DesiredState, instance: Instance) -> InstanceState:
    api = instance.api
    assert api is not None and api.url and api.database
    http = connect(instance)
    where = f"{instance.name} {managed.api_host(api.url)}"
    try:
        bdb = http.get_existing(f"/v1/bdbs/{api.database}", f"{where}: database {api.database} does not exist (api.database)")
        software = software_version(http)
        passwords = versions.password_api(software, where)
        users = listed(http, "/v1/users")
        roles = {r["uid"]: r for r in listed(http, "/v1/roles")}
        acls = {a["uid"]: a for a in listed(http, "/v1/redis_acls")}
        mtls: dict[str, Any] = {}
        if any(u.certificates for u in desired.users_for(instance.name)):
            # security/certificates/certificate-based-authentication: certificate users need an
            # mtls_trusted_ca certificate and mtls_certificate_authentication on the cluster,
            # and mTLS (tls_mode, enforce_client_authentication) on the database.
            cluster = http.get_object("/v1/cluster")
            certs = http.get_object("/v1/cluster/certificates")
            mtls = {
                "mtls": bool(cluster.get("mtls_certificate_authentication")),
                "subject_validation": str(cluster.get("mtls_client_cert_subject_validation_type") or "disabled"),
                "trusted_ca": isinstance(certs, dict) and bool(certs.get(TRUSTED_CA)),
                "database_mtls": bdb.get("tls_mode") == "enabled" and bdb.get("enforce_client_authentication") == "enabled",
            }
    finally:
        http.close()
    record = managed.load_record(desired.source, NAME).get(instance.name, {})
    node = replace(_node(desired, instance, bdb, users, roles, acls, record), software=software, admin_can_add=passwords.admin_can_add, **mtls)
    return InstanceState(name=instance.name, nodes=(node,), topology="standalone")


def _node(desired: DesiredState, instance: Instance, bdb: dict, users: list, roles: dict, acls: dict, record: dict) -> RSNode:
    assert instance.api is not None and instance.api.url
    bound = {p.get("role_uid"): p.get("redis_acl_uid") for p in bdb.get("roles_permissions") or []}
    acl_by_name = {a.get("name"): a for a in acls.values()}
    declared = {u.name: u for u in desired.users_for(instance.name)}
    admin = instance.admin.username
    live: dict[str, LiveUser] = {}
    subjects: dict[str, str] = {}
    methods: dict[str, str] = {}
    for u in users:
        name = u.get("name") or ""
        if not name or name == DEFAULT or admin in (name, u.get("email")):
            continue
        role_uids = list(u.get("role_uids") or [])
        management = [roles.get(r, {}).get("management", "none") for r in role_uids]
        # Cluster-management users (admin, db_viewer, ...) are not this file's business unless named in it.
        if name not in declared and (not role_uids or any(m != "none" for m in management)):
            continue
        own = acl_by_name.get(PREFIX + name)
        if own is not None:
            rules = own.get("acl", "")
        else:
            rules = " ".join(acls[bound[r]].get("acl", "") for r in role_uids if bound.get(r) in acls)
        enabled = any(r in bound for r in role_uids)
        method = u.get("auth_method") or "regular"
        if method == "certificate":
            hashes: tuple[str, ...] = ()
            subjects[name] = u.get("certificate_subject_line") or ""
        else:
            rec = record.get(name)
            if isinstance(rec, dict) and rec.get("issued") == u.get("password_issue_date") and rec.get("tokens"):
                hashes = tuple(sorted(rec["tokens"]))
            else:
                hashes = (UNKNOWN,)
        methods[name] = method
        live[name] = LiveUser(name=name, enabled=enabled, nopass=False, hashes=hashes, rules=rules)
    if DEFAULT in declared:
        # The database's default user (requests/bdbs/passwords): its password is the bdb's and is
        # never returned; the record says which token apply set. Its permissions are not an ACL
        # the reconciler manages (the file may not declare any: refine refuses them).
        rec = record.get(DEFAULT)
        hashes = tuple(sorted(rec["tokens"])) if isinstance(rec, dict) and rec.get("tokens") else (UNKNOWN,)
        live[DEFAULT] = LiveUser(name=DEFAULT, enabled=True, nopass=False, hashes=hashes, rules=declared[DEFAULT].rules)
    version = str(bdb.get("version") or "7.2.0")
    table = acl.CommandTable.nearest("redis", version)
    return RSNode(
        address=managed.api_host(instance.api.url),
        server="redis",
        version=version,
        users=live,
        command_table=table.name,
        admin_user=admin,
        tls=True,
        database=int(bdb.get("uid") or instance.api.database or 0),
        subjects=subjects,
        auth_methods=methods,
    )
