"""Checks and model pieces for `provider: redis-cloud` (Redis Cloud API), kept out of the Builder.

The rules come from the Redis Cloud API reference (openapi.json, "Version 1 Redis Cloud API")
and the Redis Cloud docs (operate/rc/security/access-control/data-access-control):
- an ACL user has one role and one password (AclUserCreateRequest {name, role, password}), so
  two tokens of one file user need two Cloud usernames (the token's `username:`);
- ACL user passwords are 8 to 128 characters (create-assign-users); the reconciler also requires
  upper, lower, digit and special characters (password complexity of the credential-rotation
  guide), checked here where the plaintext is known;
- the API takes passwords in plaintext, so `sha256:` tokens can't be used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import Admin, ApiSettings, Certificate, Instance, Token
from .core import BuilderCore, missing_service_classes

if TYPE_CHECKING:
    from .yamlsrc import Path

PROVIDER = "redis-cloud"
DEFAULT_URL = "https://api.redislabs.com/v1"
MAX_PASSWORD = 128  # create-assign-users: "ACL user passwords must be between 8 and 128 characters long"


def api(b: BuilderCore, spec: dict, raw: Any, base: Path) -> ApiSettings | None:
    if "nodes" in spec:
        b.problem(base + ("nodes",), "nodes: is not used by provider redis-cloud (the database is reached through api:)")
    if not isinstance(raw, dict):
        return None  # the schema reported it
    sub, db = raw.get("subscription"), raw.get("database")
    if not isinstance(sub, int) or isinstance(sub, bool):
        b.problem(base + ("api",), "provider redis-cloud needs api.subscription (the Pro subscription id)")
        sub = None
    if not isinstance(db, int) or isinstance(db, bool):
        b.problem(base + ("api",), "provider redis-cloud needs api.database (the database id in that subscription)")
        db = None
    for key in ("tls", "tls_client_auth"):
        if key in spec:
            b.problem(base + (key,), f"{key}: is not used by provider redis-cloud (api.ca_file is the API's CA; "
                      "client_certificates: are the database's mTLS certificates)")
    for key in ("instance", "data_plane"):
        if key in raw:
            b.problem(base + ("api", key), f"api.{key} is for provider memorystore")
    admin = spec.get("admin")
    if not isinstance(admin, dict) or "account_key" not in admin or "secret" not in admin:
        b.problem(base + ("admin",), "provider redis-cloud needs admin.account_key (x-api-key) and admin.secret (x-api-secret-key)")
    url = raw.get("url") if isinstance(raw.get("url"), str) else DEFAULT_URL
    ca = raw.get("ca_file") if isinstance(raw.get("ca_file"), str) else None
    return ApiSettings(
        url=url,
        database=db,
        subscription=sub,
        ca_file=b.path_of(ca) if ca else None,
        allow_password_replace=raw.get("allow_password_replace") is True,
    )


def not_cloud(b: BuilderCore, spec: dict, raw: Any, base: Path) -> None:
    """Keys only redis-cloud reads, on another provider's instance."""
    if isinstance(raw, dict):
        for key in ("subscription", "allow_password_replace"):
            if key in raw:
                b.problem(base + ("api", key), f"api.{key} is for provider redis-cloud")
    if "client_certificates" in spec:
        b.problem(base + ("client_certificates",), "client_certificates: is for provider redis-cloud (clientTlsCertificates)")
    if isinstance(spec.get("admin"), dict) and "account_key" in spec["admin"]:
        b.problem(base + ("admin", "account_key"), "admin.account_key is for provider redis-cloud")


def account_key(b: BuilderCore, raw: dict, path: Path, instance: str, admin: Admin) -> Admin:
    from dataclasses import replace

    if "account_key" not in raw:
        return admin
    _, resolved = b.resolve_secret(raw["account_key"], path + ("account_key",), f"admin account_key of instance {instance}")
    return replace(admin, account_key=resolved.secret if resolved else None)


def client_certificates(b: BuilderCore, spec: dict, base: Path) -> tuple[Certificate, ...] | None:
    raw = spec.get("client_certificates")
    if (spec.get("provider") != PROVIDER) or not isinstance(raw, list):
        return None
    from .. import (
        certs,  # imports `cryptography`: only files that list certificates pay for it
    )

    out: list[Certificate] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("cert_file"), str):
            continue
        where = base + ("client_certificates", i, "cert_file")
        path = b.path_of(item["cert_file"])
        try:
            info = certs.inspect(path)
        except certs.CertError as exc:
            b.problem(where, str(exc))
            continue
        if info.sha256 in seen:
            b.problem(where, f"the same certificate as client_certificates[{seen[info.sha256]}]")
            continue
        seen[info.sha256] = i
        out.append(Certificate(subject=info.subject, cert_file=path, line=b.line(base + ("client_certificates", i)), info=info))
    return tuple(out)


def tokens(b: BuilderCore, user: str, tokens_: tuple[Token, ...], path: Path, user_instances: tuple[str, ...], instances: dict[str, Instance]) -> None:
    cloud = [n for n in user_instances if instances[n].provider == PROVIDER]
    owners: dict[str, int] = {}
    for i, t in enumerate(tokens_):
        where = path + (i,)
        if t.username is not None and not cloud:
            b.problem(where + ("username",), f"token {t.id} of user {user}: username: is for provider redis-cloud")
            continue
        if not cloud:
            continue
        if user == "default" and t.username is not None:
            b.problem(where + ("username",), "the default user's token is the database password: it takes no username")
        # sha256 entries: refused through the provider's Capabilities (Builder.provider_tokens)
        name = t.username or user
        if name in owners:
            b.problem(
                where,
                f"token {t.id} of user {user}: a Redis Cloud ACL user holds one password, and tokens[{owners[name]}] "
                f"already goes to '{name}': give this token its own username: (the rotation pair)",
            )
        owners.setdefault(name, i)
        if t.plaintext is not None:
            value = t.plaintext.reveal()
            if not 8 <= len(value) <= MAX_PASSWORD or missing_service_classes(value):
                b.problem(
                    where + ("secret",),
                    f"token {t.id} of user {user} ({t.source}): Redis Cloud passwords need 8 to {MAX_PASSWORD} characters "
                    "with upper- and lower-case letters, a digit and a special character",
                )
