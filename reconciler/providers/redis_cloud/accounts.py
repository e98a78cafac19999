"""Redis Cloud names and accounts shared by reading (read.py), planning (refine.py) and apply
(apply.py): Cloud ACL users belong to the account, one per token."""

from __future__ import annotations

from ...model import DesiredState, Instance, User

NAME = "redis-cloud"
PREFIX = "reconciler-"  # names of the Redis rule and the role made for each user
CERTS = "clientTlsCertificates"


def same_account(desired: DesiredState, instance: Instance) -> list[Instance]:
    """The file's redis-cloud instances on the same API and account as `instance` (itself included),
    by name: they share the account's ACL users, roles and rules."""
    return [
        other for _, other in sorted(desired.instances.items())
        if other.provider == NAME and other.api is not None and instance.api is not None
        and other.api.url == instance.api.url and other.admin.account_key == instance.admin.account_key
    ]


def known_passwords(desired: DesiredState, record: dict, instance: Instance) -> dict[str, dict]:
    """Cloud ACL users belong to the account, not to one database: what the apply of any instance
    of this file on the same API and account recorded about them (this instance's entries win)."""
    out: dict[str, dict] = {}
    for other in same_account(desired, instance):
        if other.name != instance.name:
            out.update((record.get(other.name) or {}).get("users") or {})
    out.update((record.get(instance.name) or {}).get("users") or {})
    return out


def wanted_accounts(user: User) -> dict[str, str]:
    """Cloud username -> sha256 of the token it holds (validate made the usernames unique)."""
    return {t.username or user.name: t.sha256 for t in user.tokens}
