"""Rotation, the pure part: which token entries rotate, when each is due, how a new token enters
the desired state at each step, and what a plan left behind by an earlier run means.

A rotation of the entry `current` (the store's latest version v; `previous` reads v-1) is the
one order in which no login fails:

    1  make a new token N that every provider of the user accepts (tokengen.py)
    2  apply the file plus N: N is added on every node next to v and v-1
    3  write N as the store's version v+1, with check-and-set on v
    4  apply the file as it now reads: current = N, previous = v; v-1 is removed

Apps that re-read "latest" move from v to N on their own, and v-1 goes only after they had
`min_overlap_hours` to move off it. rotator.py carries the steps out (steps 2 and 4 through the
Manager's apply pipeline); everything here is data in, data out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from .model import NEXT, PREVIOUS, DesiredState, Instance, Policies, Rotation, Secret, Token, User, server_token_ref
from .plan import Finding, FindingKind, Plan, TokenAction, only_changes
from .providers.base import Capabilities


class Strategy(StrEnum):
    """How a new token gets next to the ones apps hold, by what the user's providers allow."""

    ADD = "add"  # another password next to current and previous
    REPLACE = "replace"  # the user holds one password (`default` on a managed service): old connections fail
    PAIR = "pair"  # one password per login (Redis Cloud): the new version goes to the login of the version before
    SERVICE = "service"  # the service makes the token (memorystore); the entry's sink takes it


@dataclass(frozen=True)
class Entry:
    """One rotating token entry of one user."""

    user: str
    token: Token  # the entry with `rotate:` ("current")
    previous_id: str | None  # the entry that reads the version before (vault -1, a file's .previous), if declared
    previous: Token | None  # ... and its token when the store has that version
    instances: tuple[str, ...]  # where the user lives: the steps apply to all of them
    sentinel: bool  # a sentinel_users user of instances[0]
    strategy: Strategy

    @property
    def label(self) -> str:
        return f"user {self.user} token {self.token.id}"

    @property
    def rotate(self) -> Rotation:
        assert self.token.rotate is not None
        return self.token.rotate

    def keep(self, instance: str, user: str) -> bool:
        """Which changes of a plan are this rotation's: the user's, on its instances."""
        return user == self.user and instance in self.instances


def strategy(user: str, caps: list[Capabilities]) -> Strategy:
    if any(c.server_generated_tokens for c in caps):
        return Strategy.SERVICE
    if user == "default" and any(c.one_default_password for c in caps):
        return Strategy.REPLACE
    if any(c.password_pair for c in caps):
        return Strategy.PAIR
    return Strategy.ADD


def entries(desired: DesiredState, caps: dict[str, Capabilities], instances: list[str] | None = None,
            users: list[str] | None = None) -> list[Entry]:
    """Every rotating entry of the file (users, then each instance's sentinel_users), narrowed to
    users on `instances` and to `users`. `caps`: each instance's provider's capabilities."""
    out: list[Entry] = []

    def add(user: User, where: tuple[str, ...], sentinel: bool) -> None:
        if users is not None and user.name not in users:
            return
        if instances is not None and not set(where) & set(instances):
            return
        for t in user.tokens:
            if t.rotate is None:
                continue
            prev_source = f"{t.source}@-1"
            previous = next((p for p in user.tokens if p.source == prev_source or p.id == t.id + PREVIOUS), None)
            absent = next((a for a in user.absent_tokens if a.source == prev_source), None)
            previous_id = previous.id if previous else absent.id if absent else None
            if previous_id is None and t.rotate.store.kind == "file":
                previous_id = t.id + PREVIOUS  # the first rotation makes PATH.previous
            how = strategy(user.name, [caps[n] for n in where])
            out.append(Entry(user.name, t, previous_id, previous, where, sentinel, how))

    for user in desired.users.values():
        add(user, user.instances, False)
    for name, inst in desired.instances.items():
        for user in inst.sentinel_users or ():
            add(user, (name,), True)
    return out


# -- when ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    due: bool
    at: datetime | None  # when it is (or was) due; None when the store did not say when the version was made
    why: str  # "due since 2026-12-01", "asked for with --user", "not due before 2027-01-03"


def schedule(every_days: int, created: datetime | None, now: datetime, asked: bool) -> Schedule:
    """Due when the latest version is `every_days` old (by the store's created_time, whoever wrote
    it), or when the operator named the user. A version of unknown age is due."""
    at = created + timedelta(days=every_days) if created else None
    if asked:
        return Schedule(True, at, "asked for with --user")
    if at is None:
        return Schedule(True, None, "the store does not say when the latest version was made")
    if now >= at:
        return Schedule(True, at, f"due since {stamp(at)}")
    return Schedule(False, at, f"next due {stamp(at)}")


def overlap_problem(created: datetime | None, now: datetime, policies: Policies) -> str | None:
    """A rotation removes the version before the latest: apps must have had min_overlap_hours
    since the latest was made to re-read it. None when they had."""
    if created is None or policies.min_overlap_hours == 0:
        return None
    ready = created + timedelta(hours=policies.min_overlap_hours)
    if now >= ready:
        return None
    hours = max(0.0, (now - created).total_seconds() / 3600)
    return (
        f"the latest version was made {hours:.1f} hours ago ({stamp(created)}); policies.min_overlap_hours is "
        f"{policies.min_overlap_hours}: apps that re-read the store less often may still hold the version before it, "
        f"which this rotation removes. Rotate after {stamp(ready)}, or pass --force"
    )


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def due_findings(desired: DesiredState, instance: str, today: date) -> list[Finding]:
    """Drift: each rotating entry on `instance` whose latest version is older than rotate.every_days."""
    out = []
    inst = desired.instances[instance]
    for user in list(desired.users_for(instance)) + list(inst.sentinel_users or ()):
        for t in user.tokens:
            r = t.rotate
            due = r.due_on() if r is not None else None
            if r is not None and r.since is not None and due is not None and due <= today:
                out.append(Finding(
                    FindingKind.ROTATION_DUE,
                    f"user {user.name} token {t.id}: the latest value in {r.store.describe()} is from {r.since.isoformat()}, "
                    f"older than rotate.every_days ({r.every_days}); run reconciler rotate",
                    instance, user=user.name, token_id=t.id,
                ))
    return out


# -- the desired state at each step ----------------------------------------------------------


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_token(entry: Entry, value: str | None, username: str | None, today: date) -> Token:
    """The rotation's new token, as the step-2 plan shows it (`current:next`). `value` None: the
    service makes it (memorystore), and the entry's sink takes it."""
    t = entry.token
    tid = t.id + NEXT
    if value is None:
        return Token(id=tid, sha256=server_token_ref(entry.user, tid), created=today, source="server-generated",
                     sink=t.sink, succeeds=t.id, line=t.line)
    return Token(id=tid, sha256=sha256(value), created=today, source="rotate", plaintext=Secret(value),
                 username=username, line=t.line, note="made by reconciler rotate")


def step2_tokens(entry: Entry, user: User, new: Token) -> tuple[Token, ...]:
    """Step 2: the file's tokens plus the new one (where the user can hold only so many, in place
    of the one the rotation retires anyway)."""
    tokens = user.tokens
    if entry.strategy == Strategy.REPLACE:
        return tuple(new if t.id == entry.token.id else t for t in tokens)
    if entry.strategy == Strategy.PAIR:
        return tuple(t for t in tokens if t.id != entry.previous_id) + (new,)
    return tokens + (new,)


def after_tokens(entry: Entry, user: User, new: Token) -> tuple[Token, ...]:
    """Step 4 as predicted: what the file reads once the store holds the new version (current = new,
    previous = the current value), for showing the whole rotation before it starts."""
    cur = entry.token
    out: list[Token] = []
    for t in user.tokens:
        if t.id == cur.id:
            out.append(dataclasses.replace(cur, sha256=new.sha256, plaintext=new.plaintext, username=new.username))
        elif t.id != entry.previous_id:
            out.append(t)
    if entry.previous_id is not None and entry.strategy != Strategy.REPLACE:
        out.append(dataclasses.replace(cur, id=entry.previous_id, rotate=None))
    return tuple(out)


def with_user_tokens(desired: DesiredState, entry: Entry, tokens: tuple[Token, ...]) -> DesiredState:
    """`desired` with the entry's user holding `tokens` (a top-level user or a sentinel user)."""
    ids = {t.id for t in tokens}

    def held(u: User) -> User:  # an entry that holds a token now is no longer "none yet"
        return dataclasses.replace(u, tokens=tokens, absent_tokens=tuple(a for a in u.absent_tokens if a.id not in ids))

    if not entry.sentinel:
        return dataclasses.replace(desired, users={**desired.users, entry.user: held(desired.users[entry.user])})
    name = entry.instances[0]
    inst = desired.instances[name]
    users = tuple(held(u) if u.name == entry.user else u for u in inst.sentinel_users or ())
    return dataclasses.replace(desired, instances={**desired.instances, name: dataclasses.replace(inst, sentinel_users=users)})


def user_of(desired: DesiredState, entry: Entry) -> User:
    if not entry.sentinel:
        return desired.users[entry.user]
    return next(u for u in desired.instances[entry.instances[0]].sentinel_users or () if u.name == entry.user)


def allow_pair_replace(desired: DesiredState, entry: Entry) -> DesiredState:
    """Redis Cloud, step 2 of a pair rotation: the new version replaces the password of the login
    that holds the version before `previous` -- the one step 4 would remove anyway -- so the
    provider's consent rule for replacing a password in place is met by the rotation."""
    if entry.strategy != Strategy.PAIR:
        return desired
    out: dict[str, Instance] = dict(desired.instances)
    for name in entry.instances:
        inst = out[name]
        if inst.api is not None:
            out[name] = dataclasses.replace(inst, api=dataclasses.replace(inst.api, allow_password_replace=True))
    return dataclasses.replace(desired, instances=out)


def other_username(entry: Entry, current: str | None) -> str | None:
    """Redis Cloud: the Cloud user of the pair that the current version does not use."""
    if entry.strategy != Strategy.PAIR:
        return None
    pair = entry.rotate.usernames
    return pair[1] if current == pair[0] else pair[0]


# -- what a plan left by an earlier run means -----------------------------------------------------


@dataclass(frozen=True)
class Unfinished:
    """The file's plan still changes the rotating user's tokens."""

    orphans: tuple[str, ...]  # live hashes no store version holds: a rotation added them and never stored them
    stale: tuple[str, ...]  # live hashes of older store versions: a rotation stored its token, its last apply did not finish
    missing: tuple[str, ...]  # hashes the file declares and some node lacks

    @property
    def stored(self) -> bool:
        """A rotation stored its token and stopped before its last apply: converging finishes it,
        and this run writes no further version. (Orphans, or other drift only, are folded into
        the next rotation's step 2 instead.)"""
        return not self.orphans and bool(self.stale or self.missing)


def unfinished(plan: Plan, entry: Entry, store_hashes: Mapping[str, Any]) -> Unfinished | None:
    """None when the plan leaves the entry's user alone."""
    removed: list[str] = []
    added: list[str] = []
    changed = False
    for inst in only_changes(plan, entry.keep, config=False).instances:
        for node in inst.nodes:
            for c in node.changes:
                changed = True
                for t in c.tokens:
                    if t.action == TokenAction.REMOVE and t.token_id is None:
                        removed.append(t.sha256)
                    elif t.action == TokenAction.ADD:
                        added.append(t.sha256)
    if not changed:
        return None
    removed = list(dict.fromkeys(removed))
    return Unfinished(
        orphans=tuple(h for h in removed if h not in store_hashes),
        stale=tuple(h for h in removed if h in store_hashes),
        missing=tuple(dict.fromkeys(added)),
    )


def with_retired(desired: DesiredState, entry: Entry, plan: Plan, held: Mapping[str, Any], today: date) -> DesiredState | None:
    """The values older store versions hold for hashes `plan` removes (not declared by the file),
    as expired entries: a service that deletes a password by its value (Redis Software) then
    removes each one alone instead of replacing them all. `held`: sha256 -> writable.Held.
    None when there is nothing to add."""
    user = user_of(desired, entry)
    known = {t.sha256 for t in user.tokens}
    removed = [t.sha256 for inst in plan.instances for node in inst.nodes for c in node.changes if entry.keep(inst.name, c.user)
               for t in c.tokens if t.action == TokenAction.REMOVE and t.token_id is None]
    extra = tuple(
        Token(id=f"{entry.token.id}@{held[h].name.replace('version ', 'v')}", sha256=h, plaintext=held[h].value,
              expires=today - timedelta(days=1), source=entry.token.source, line=entry.token.line, note="retired by a rotation")
        for h in dict.fromkeys(removed) if h in held and h not in known
    )
    return with_user_tokens(desired, entry, user.tokens + extra) if extra else None


def only_removes(plan: Plan, entry: Entry, keep: set[str]) -> bool:
    """Step 4 as expected: changes to the rotating user only, which remove token hashes (none of
    `keep`: the value apps hold now and the new one) and change nothing else."""
    for inst in plan.instances:
        for node in inst.nodes:
            if node.config:
                return False
            for c in node.changes:
                if not entry.keep(inst.name, c.user) or c.action != "update" or c.permissions or c.certificates:
                    return False
                if c.enabled_before is not None and c.enabled_before != c.enabled:
                    return False
                for t in c.tokens:
                    if t.action == TokenAction.ADD or (t.action == TokenAction.REMOVE and t.sha256 in keep):
                        return False
    return True


def removed_hashes(plan: Plan, entry: Entry) -> list[str]:
    out = [t.sha256 for inst in plan.instances for node in inst.nodes for c in node.changes if entry.keep(inst.name, c.user)
           for t in c.tokens if t.action == TokenAction.REMOVE]
    return list(dict.fromkeys(out))
