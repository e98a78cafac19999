"""What each Redis Software version's REST API does with passwords: the one place the
`redis-software` provider keeps version knowledge.

Sources (Redis Software REST API reference and release notes, redis.io/docs/latest/operate/rs/):
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

from ..errors import LiveError

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


def lowest(versions: list[str]) -> str:
    """The oldest software_version among the cluster's nodes (mid-upgrade clusters follow the oldest)."""
    parsed = [(parse(v), v) for v in versions if parse(v) is not None]
    return min(parsed)[1] if parsed else (versions[0] if versions else "")
