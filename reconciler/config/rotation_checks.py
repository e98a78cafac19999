"""`rotate:` on token entries, and what it needs from the rest of the file, for the Builder.

A token rotates only where its source can be written: a vault: secret read at version 0 (the
new value becomes the path's next version), a file: secret (the old value moves to
PATH.previous), or a sink: (memorystore: the service makes the value, the sink takes it). The
entries that keep apps logging in during a rotation are checked here too: the version before
(vault `version: -1`), and for Redis Cloud the pair of Cloud users new versions alternate through.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import providers, secrets
from ..model import PREVIOUS, Instance, Rotation, Sink, Token
from ..secrets import registry
from ..secrets.vault import VaultRef
from .core import as_dict, as_list, as_str, is_int

if TYPE_CHECKING:
    from .core import BuilderCore
    from .yamlsrc import Path



def rotation(b: "BuilderCore", spec: dict, where: "Path", label: str, sink: Sink | None, stored: date | None) -> Rotation | None:
    """The entry's `rotate:`, or None (absent, malformed: the schema said so, or a source that
    can't be written: said here)."""
    raw = spec.get("rotate")
    if not isinstance(raw, dict) or not is_int(raw.get("every_days")) or raw["every_days"] < 1:
        return None
    path = where + ("rotate",)
    if spec.get("expires") is not None:
        # The file never changes on a rotation: the date would expire each new token in turn, and
        # the apply after it would remove the token apps hold now.
        b.problem(where + ("expires",), f"{label}: expires: on a rotating entry would expire every new token on that "
                  f"same date; rotate: replaces the token every {raw['every_days']} days -- remove expires:")
        return None
    store: Sink | None = None
    since = stored
    ref: Any = spec.get("secret")
    kind = registry.kind_of(ref) if "secret" in spec else None
    if kind == "vault" and secrets.well_formed(ref):
        vref = VaultRef.from_spec(ref["vault"])
        if vref.version != 0:
            b.problem(path, f"{label}: rotate: writes the store's next version, so the entry must read the latest "
                      "(version 0); the entry that reads version -1 follows by itself")
            return None
        store = Sink("vault", vref.path, vref.field, vref.mount)
    elif kind == "file" and isinstance(ref["file"], str):
        resolved = b.path_of(ref["file"])
        store = Sink("file", resolved)
        if b.resolve_secrets:
            try:
                since = datetime.fromtimestamp(os.stat(resolved).st_mtime, timezone.utc).date()
            except OSError:
                since = None  # reading the secret said what is wrong
    elif sink is not None:
        store = sink
    else:
        what = f"a {kind}: secret" if kind else "a sha256: entry"
        b.problem(path, f"{label}: rotate: needs a source it can write the new token to -- a vault: secret "
                  f"(version 0), a file: secret, or a sink: -- and {what} can't be written")
        return None
    usernames = tuple(u for u in as_list(raw.get("usernames")) if isinstance(u, str))
    field = as_str(as_dict(spec.get("username")).get("field"))
    return Rotation(every_days=raw["every_days"], store=store, since=since, usernames=usernames, username_field=field)


def previous_file(b: "BuilderCore", spec: dict, where: "Path", tid: str, user: str) -> dict[str, Any] | None:
    """A rotating file: secret's PATH.previous, when it exists: the reference to read as the
    token `<id>.previous` (the value apps held before the last rotation)."""
    ref: Any = spec.get("secret")
    if not (b.resolve_secrets and registry.kind_of(ref) == "file" and isinstance(ref["file"], str)):
        return None
    if not os.path.exists(b.path_of(ref["file"]) + PREVIOUS):
        return None
    return {"file": ref["file"] + PREVIOUS}


def cloud_username(b: "BuilderCore", spec: dict, where: "Path", label: str) -> str | None:
    """`username: {field: NAME}`: the Cloud username stored next to the token in the same vault
    version (not a secret: read without being remembered as one). Plain validate reads nothing:
    a stand-in unique to the entry then keeps the one-password-per-Cloud-user check quiet."""
    field = as_str(as_dict(spec.get("username")).get("field"))
    if field is None:
        return None
    ref: Any = spec.get("secret")
    if registry.kind_of(ref) != "vault" or not secrets.well_formed(ref):
        b.problem(where + ("username",), f"{label}: username: {{field: {field}}} reads the token's vault version; "
                  "the entry needs a vault: secret")
        return None
    if not b.resolve_secrets:
        return f"(field {field} of token {spec.get('id')})"
    got = b.store_field(ref, field, where + ("username",), label)
    return got


def user_checks(b: "BuilderCore", user: str, tokens: tuple[Token, ...], absent_sources: list[str], raw: Any, path: "Path",
                user_instances: tuple[str, ...], instances: dict[str, Instance]) -> None:
    """What a user's rotating entries need from the rest of the user and from its providers."""
    if not any(t.rotate is not None for t in tokens):
        return
    sources = [t.source for t in tokens] + absent_sources
    index = {str(spec.get("id")): i for i, spec in enumerate(as_list(raw)) if isinstance(spec, dict)}
    stores: dict[str, str] = {}
    for t in tokens:
        r = t.rotate
        if r is None:
            continue
        where = path + (index.get(t.id, 0), "rotate")
        if r.store.describe() in stores:
            b.problem(where, f"token {t.id} of user {user} rotates {r.store.describe()}, which token {stores[r.store.describe()]} "
                      "rotates already: one entry rotates a store")
        stores.setdefault(r.store.describe(), t.id)
        if r.store.kind == "vault" and t.sink is None:
            # Each rotation writes a version of the whole path: another field's `version: -1` would
            # then read the value its latest holds (the same token twice), not the one before it.
            shown = f"{r.store.mount}/{r.store.path}"
            other = b.claim(b.rotated_paths, shown, f"token {t.id} of user {user}", where)
            if other is not None:
                b.problem(where, f"token {t.id} of user {user} rotates a field of vault path {shown}, whose versions "
                          f"{other[0]} (line {other[1]}) writes already: give each rotating token a path of its own")
        caps = [providers.capabilities(instances[n].provider) for n in user_instances if providers.known(instances[n].provider)]
        one_password = user == "default" and any(c.one_default_password for c in caps)
        if r.store.kind == "vault" and t.sink is None and not one_password and f"{t.source}@-1" not in sources:
            b.problem(where, f"token {t.id} of user {user} rotates {t.source}: declare the version before too "
                      f"(- id: previous, secret: {{vault: {{path: {r.store.path}, field: {r.store.field}"
                      f"{'' if r.store.mount == 'secret' else f', mount: {r.store.mount}'}, version: -1}}}}), "
                      "so apps that hold the current version keep logging in after a rotation")
        pair = [n for n in user_instances if providers.known(instances[n].provider) and providers.capabilities(instances[n].provider).password_pair]
        if pair and user != "default":
            if len(set(r.usernames)) != 2 or r.username_field is None:
                b.problem(where, f"token {t.id} of user {user} is on provider {instances[pair[0]].provider} (one password per "
                          "Cloud user): rotate through a pair -- rotate: {usernames: [NAME_A, NAME_B]} and username: {field: username}, "
                          "so each version names its Cloud user next to the token")
        elif r.usernames:
            b.problem(where + ("usernames",), f"token {t.id} of user {user}: rotate.usernames is for provider redis-cloud (the rotation pair)")
