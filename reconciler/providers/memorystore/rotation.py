"""Rotation on Memorystore, where the service names the tokens: the record keeps which service
token a rotating token's new value (`<id>:next`) and the value it replaced (`<id>.previous`)
are, so a rotation promotes the new one after its sink took it, and a run that stopped in
between is settled by the next `rotate`."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from ...errors import remember_secret
from ...model import NEXT, PREVIOUS, DesiredState, Instance, Token, User, server_token_ref
from .. import managed
from ..http import HttpError
from .client import connect
from .read import NAME


def with_rotation_names(user: User, held: set[str]) -> User:
    """A rotating token's other service tokens, kept while they exist (never made by a plan): the
    one it replaced (`<id>.previous`, removed by the next rotation) and a new one a stopped
    rotation made but did not promote (`<id>:next`, settled by the next `rotate`)."""
    ids = {t.id for t in user.tokens}
    extra = []
    for t in user.tokens:
        if t.rotate is None:
            continue
        for label, why in ((t.id + PREVIOUS, "the value before the last rotation"), (t.id + NEXT, "made by a rotation that stopped")):
            ref = server_token_ref(user.name, label)
            if label not in ids and ref in held:
                extra.append(Token(id=label, sha256=ref, source="server-generated", line=t.line, note=why))
    return replace(user, tokens=user.tokens + tuple(extra)) if extra else user


def promote(desired: DesiredState, instance: str, user: str, token_id: str) -> None:
    """`<id>:next` becomes `token_id` in the record, and the one it replaces `<id>.previous`."""
    record = managed.load_record(desired.source, NAME)
    names = record.setdefault(instance, {}).setdefault(user, {})
    new = names.pop(token_id + NEXT, None)
    if new is None:
        return
    old = names.get(token_id)
    names[token_id] = new
    if old is not None:
        names[token_id + PREVIOUS] = old
    else:
        names.pop(token_id + PREVIOUS, None)
    managed.save_record(desired.source, NAME, record)


def settle(desired: DesiredState, instance: Instance, user: str, token_id: str, stored_sha256: str | None) -> str | None:
    """A new token a stopped run left unpromoted: "promoted" when its value is what the store holds
    now, else "dropped" from the record (the next plan removes it); None when there is none."""
    record = managed.load_record(desired.source, NAME)
    service = ((record.get(instance.name) or {}).get(user) or {}).get(token_id + NEXT)
    if service is None:
        return None
    assert instance.api is not None and instance.api.instance
    http = connect(instance)
    try:
        try:
            value = http.get_object(f"/v1/{instance.api.instance}/tokenAuthUsers/{user}/authTokens/{service}").get("token")
        except HttpError as exc:
            if exc.status != 404:
                raise
            value = None
    finally:
        http.close()
    if isinstance(value, str) and value:
        remember_secret(value)
        if hashlib.sha256(value.encode()).hexdigest() == stored_sha256:
            promote(desired, instance.name, user, token_id)
            return "promoted"
    record[instance.name][user].pop(token_id + NEXT, None)
    managed.save_record(desired.source, NAME, record)
    return "dropped"
