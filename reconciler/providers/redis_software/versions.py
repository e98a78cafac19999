"""What each Redis Software version's REST API does: the one place the `redis-software`
provider keeps version knowledge. Every feature the provider relies on that not every supported
version has is checked here against the cluster's software_version (GET /v1/nodes), so an older
cluster is a plan error before any write, never a failed request halfway through an apply.

Sources (Redis Software REST API reference and release notes, redis.io/docs/latest/operate/rs/):
  7.2.4 release notes 7.2.4-52, "Redis ACL selectors and key-based permissions": "Redis ACLs in
       Redis Enterprise version 7.2 support key permissions and selectors" (`%R~`, `%W~`,
       `(...)`); selectors are "only supported for databases with Redis version 7.2 or later".
       Every supported cluster (7.4+) has them; a database older than Redis 7.2 does not: the
       planner refuses them there (the database's command table has no selectors), and
       `acl_v2_problem` covers a 7.0 database, whose command table would allow them.
  7.8.4 release notes 7.8.4-18, "Certificate-based authentication for the REST API": users with
       `"auth_method": "certificate"` and `certificate_subject_line`, and the cluster's
       `mtls_certificate_authentication` (security/certificates/certificate-based-authentication
       has no 7.4 version): `certificate_users_problem`.
  7.4  requests/users/password: POST, PUT and DELETE /v1/users/password take `username` and
       `old_password` (an existing password of that user authorizes the change).
  7.8  requests/users/password: `old_password` is ignored on POST and PUT; the caller's
       credentials decide, and an admin names the affected user with `username`.
  7.8.2 .. 7.8.6-118, 7.22.0 builds before 216: the password requests change the *caller's*
       passwords whatever `username` says (RS161290; fixed in 7.8.6-119 and 7.22.0-216, release
       notes). An admin calling them would rotate its own password: refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import LiveError

Version = tuple[int, int, int, int]  # major, minor, patch, build


def parse(text: str) -> Version | None:
    """'7.22.0-216' -> (7, 22, 0, 216); '7.4.2' -> (7, 4, 2, 0)."""
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?(?:-(\d+))?", text or "")
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), int(m.group(4) or 0))


# Builds whose password requests act on the caller (RS161290): [first, fixed).
WRONG_USER = (((7, 8, 2, 0), (7, 8, 6, 119)), ((7, 22, 0, 0), (7, 22, 0, 216)))


@dataclass(frozen=True)
class PasswordApi:
    """How to change another user's passwords on one cluster version."""

    version: str
    needs_old_password: bool  # 7.4: POST/PUT need an existing password of the user

    @property
    def admin_can_add(self) -> bool:
        """An admin adds a password without knowing an existing one (no replace-all detour)."""
        return not self.needs_old_password


def password_api(version: str, where: str) -> PasswordApi:
    """The password API of `version` (a node's software_version); LiveError for refused versions."""
    v = parse(version)
    if v is None:
        raise LiveError(f"{where}: cannot read the cluster's software_version ({version!r}) from GET /v1/nodes")
    for first, fixed in WRONG_USER:
        if first <= v < fixed:
            fix = "7.8.6-119" if fixed[1] == 8 else "7.22.0-216"
            raise LiveError(
                f"{where}: Redis Software {version} changes the calling admin's password instead of the named user's "
                f"on /v1/users/password (RS161290); upgrade to {fix} or later before managing users with the reconciler"
            )
    if v < (7, 4, 0, 0):
        raise LiveError(f"{where}: Redis Software {version} is older than 7.4, the oldest version the reconciler supports")
    return PasswordApi(version=version, needs_old_password=v < (7, 8, 0, 0))


CERTIFICATE_USERS = (7, 8, 4, 0)  # release notes 7.8.4-18
SELECTORS_DATABASE = (7, 2)  # release notes 7.2.4-52: selectors and %R~/%W~ on databases with Redis 7.2+


def certificate_users_problem(software: str) -> str | None:
    """Why a cluster of this software_version can't have certificate users; None when it can."""
    v = parse(software)
    if v is not None and v < CERTIFICATE_USERS:
        return (
            f"certificate users (auth_method: certificate) need Redis Software 7.8.4 or later (release notes 7.8.4-18, "
            f"certificate-based authentication); the cluster runs {software}: upgrade it, or give the user a token"
        )
    return None


def acl_v2_problem(database_version: str, rules: str) -> str | None:
    """Why a database of this Redis version can't take these rules (selectors, %R~/%W~ key
    permissions); None when it can."""
    m = re.match(r"\s*(\d+)\.(\d+)", database_version or "")
    if m is None or (int(m.group(1)), int(m.group(2))) >= SELECTORS_DATABASE:
        return None
    words = rules.split()
    if any(w.startswith("(") for w in words) or any(re.match(r"%(R|W|RW)~", w) for w in words):
        return (
            f"Redis Software supports selectors and %R~/%W~ key permissions only on databases with Redis 7.2 or later "
            f"(release notes 7.2.4-52); this database runs Redis {database_version}"
        )
    return None


def lowest(versions: list[str]) -> str:
    """The oldest software_version among the cluster's nodes (mid-upgrade clusters follow the oldest)."""
    parsed = [(parse(v), v) for v in versions if parse(v) is not None]
    return min(parsed)[1] if parsed else (versions[0] if versions else "")
