"""`reconciler rotate`, carried out: for each rotating entry, finish what an earlier run left,
decide whether it is due, then the four steps of rotation.py -- steps 2 and 4 through the
Manager's apply pipeline (rails, prompt, lock, re-check, audit, verify), step 3 a
check-and-set write to the store. What it says (the plans shown before the confirmation, the
summary, its own audit line) is rotation_report.py's.

One confirmation covers a rotation: its step-2 plan and the plan step 4 is expected to be are
shown first. The instances stay locked from step 2 to step 4 (an `apply` or another `rotate`
waits or refuses meanwhile, so nothing removes the new token before the store names it), and
step 4 goes ahead on that confirmation only if it removes what was expected and nothing else.

What a stop leaves, and what the next run does (no local state: the servers and the store say it):
  after step 2   a hash no store version holds -> removed, then the rotation starts again
  after step 3   the store names the new token, the version before previous is still live
                 -> the file's own plan finishes it; no further version is written this run
  a second run   waits for the lock, finds the store moved past the version it started from,
                 and only applies
"""

from __future__ import annotations

import dataclasses
import random
import secrets as _random
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import providers, rotation, tokengen
from . import rotation_report as report
from .clock import today
from .errors import ReconcilerError, remember_secret
from .lock import LockError
from .pipeline import Console, Options
from .plan import Plan, only_changes
from .rotation import Entry, Strategy
from .rotation_report import Outcome
from .secrets import SecretError, writable
from .secrets.kv import CasConflict, PermissionDenied, StoreError

if TYPE_CHECKING:
    from .manager import Manager

LOCK_WAIT = 120.0  # seconds a rotation waits for another apply or rotate to release the instances
MAX_RESTARTS = 5  # fresh starts after waiting for the lock (or a store that moved while the file was read)


@dataclass(frozen=True)
class Request:
    users: list[str] | None = None  # --user: rotate these now (due or not)
    instances: list[str] | None = None  # --instance: entries of users on these instances
    dry_run: bool = False
    force: bool = False  # sooner than min_overlap_hours
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


# What a rotation stopped by an error leaves, by the step it stopped in.
AFTER_STEP = {
    "2": "the new token may be on some nodes; run rotate again: it removes it and starts again",
    "3": "the new token is on the servers, and the store may or may not have taken it; run rotate again: it finishes "
         "or starts again, as the store says",
    "4": "the store holds the new version; run rotate or apply again to finish",
}


class _Restart(Exception):
    """Start the entry again from a fresh read: this run waited for another apply or rotate (or the
    store moved while the file was read). `pinned`: the latest version seen before; a store that
    moved past it means another run rotated, and this one only applies."""

    def __init__(self, pinned: writable.Latest | None):
        super().__init__("restart")
        self.pinned = pinned


class _Stopped(Exception):
    """SIGINT/SIGTERM: the run stops after saying where."""


class Rotator:
    def __init__(self, manager: "Manager", request: Request, console: Console, options: Options):
        self.manager = manager
        self.request = request
        self.console = console
        self.options = options

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        desired = self.manager.desired
        found = self._entries(self.manager)
        if self.request.users:
            missing = sorted(set(self.request.users) - {e.user for e in found})
            if missing:
                raise ReconcilerError(f"--user {', '.join(missing)}: no token of that user in {desired.source} has rotate: "
                                      "(on the selected instances)")
        if not found:
            self.console.out(f"Nothing to rotate: no token in {desired.source} has rotate:.")
            return 0
        outcomes: list[Outcome] = []
        try:
            for entry in found:
                outcome = self.one(self._same(self.manager, entry))
                outcomes.append(outcome)
                if outcome.status in ("rotated", "finished"):
                    self.manager = self.manager.reload()  # the next entry plans from what the stores hold now
        except _Stopped:
            return 130
        return report.summary(self.console, outcomes, now=self.request.now, dry_run=self.request.dry_run)

    def _entries(self, manager: "Manager") -> list[Entry]:
        desired = manager.desired
        caps = {n: providers.capabilities(i.provider) for n, i in desired.instances.items()}
        only = manager.instance_names(self.request.instances) if self.request.instances else None
        return rotation.entries(desired, caps, only, self.request.users)

    # -- one entry -------------------------------------------------------------------------------

    def one(self, entry: Entry) -> Outcome:
        pinned: writable.Latest | None = None
        for _ in range(MAX_RESTARTS):
            try:
                return self._attempt(entry, pinned)
            except _Restart as again:
                pinned = pinned or again.pinned
                self.manager = self.manager.reload()
                entry = self._same(self.manager, entry)
        return self._failed(entry, "0", 1, "the instances or the store kept changing while this run waited; run rotate again")

    def _attempt(self, entry: Entry, pinned: writable.Latest | None) -> Outcome:
        manager = self.manager
        store = self._store(manager, entry)
        where = store.where()
        plain = (entry.rotate.username_field,) if entry.rotate.username_field else ()
        try:
            latest = store.latest(plain)
        except SecretError as exc:
            return self._failed(entry, "0", 1, str(exc))
        if latest is None:
            return self._failed(entry, "0", 1, f"{where} holds no value yet: write the first one "
                                f"(e.g. reconciler token new {entry.user} --id {entry.token.id} --sink ...)")
        if entry.strategy != Strategy.SERVICE and latest.sha256 != entry.token.sha256 and pinned is None:
            raise _Restart(latest)  # written since the file was read: read it again
        settled = self._settle(manager, entry, latest)
        state = manager.read(list(entry.instances))
        plan = self._mine(manager.plan(state), entry)
        # The store's older versions: to tell a rotation's orphan from an older version (when the plan
        # removes something), and for a provider that removes a password by its value.
        held = store.versions() if entry.strategy != Strategy.SERVICE and (plan.has_changes or self._by_value(manager, entry)) else {}
        left = rotation.unfinished(plan, entry, held)
        if pinned is not None and (pinned.version, pinned.sha256) != (latest.version, latest.sha256):
            return self._converge(manager, entry, plan, state, latest, held,
                                  f"{where} moved to {latest.name()} meanwhile (another run rotated it); applied it, no new version written")
        if left is not None and left.stored or settled == "promoted":
            report.explain(self.console, entry, left, manager.desired.source)
            return self._converge(manager, entry, plan, state, latest, held,
                                  f"finished the rotation an earlier run stored in {where}; no new version written")
        if left is not None:
            report.explain(self.console, entry, left, manager.desired.source)  # folded into step 2 (or converged when not due)
        asked = entry.user in (self.request.users or [])
        when = rotation.schedule(entry.rotate.every_days, latest.created, self.request.now, asked)
        if not when.due:
            if left is not None:
                return self._converge(manager, entry, plan, state, latest, held, f"converged; {when.why}")
            return Outcome(entry, "not-due", f"{entry.label} ({entry.rotate.store.describe()}): {when.why}", when.at)
        overlap = rotation.overlap_problem(latest.created, self.request.now, manager.desired.policies)
        if overlap and not self.request.force:
            self.console.err(f"refusing to rotate {entry.label}: {overlap}")
            return Outcome(entry, "refused", f"{entry.label}: refused: the latest version is younger than min_overlap_hours")
        return self._rotate(manager, entry, store, latest, state, held)

    def _rotate(self, manager: "Manager", entry: Entry, store: writable.Store, latest: writable.Latest, state: Any,
                held: dict[str, Any]) -> Outcome:
        desired = manager.desired
        console = self.console
        where = store.where()
        # 1: the new token (the service makes it on memorystore)
        username = rotation.other_username(entry, latest.fields.get(entry.rotate.username_field or ""))
        value: str | None = None
        if entry.strategy != Strategy.SERVICE:
            value = tokengen.new_token(entry.user, [desired.instances[n].provider for n in entry.instances], desired.policies)
            remember_secret(value)  # printed nowhere; redacted should a server or a store echo it
        new = rotation.new_token(entry, value, username, self.request.now.date())
        user = rotation.user_of(desired, entry)
        step2 = manager.derived(rotation.allow_pair_replace(rotation.with_user_tokens(desired, entry, rotation.step2_tokens(entry, user, new)), entry))
        plan2 = self._mine(step2.plan(state), entry)
        expected: Plan | None = None
        if entry.strategy != Strategy.SERVICE:
            after = manager.derived(rotation.allow_pair_replace(rotation.with_user_tokens(desired, entry, rotation.after_tokens(entry, user, new)), entry))
            _, expected = self._retire(after, entry, self._mine(after.plan(state), entry), state, held)
        report.show(self.console, entry, where, latest, plan2, expected, desired.policies.min_overlap_hours, username)
        if self.request.dry_run:
            return Outcome(entry, "would-rotate", f"{entry.label}: would write the next version of {where}")
        try:
            store.check_writable()  # before the token exists anywhere
        except SecretError as exc:
            return self._failed(entry, "1", 1, f"{exc}; nothing was changed")

        rid = _random.token_hex(6)
        options = dataclasses.replace(self.options, audit_fields={**self.options.audit_fields, "rotation": rid})
        step = "1"
        try:
            with self._hold(step2, plan2, latest):
                again = store.latest(())
                if again is None or (again.version, again.sha256) != (latest.version, latest.sha256):
                    raise _Restart(latest)  # written while this run got the lock: start from it
                step = "2"
                console.out(f"\nStep 2 of 4: add the new token ({new.id}, sha256:{new.prefix}…) on every node")
                confirmed: list[bool] = []

                def confirm(plan: Plan) -> bool:
                    confirmed.append(console.confirm(plan))
                    return confirmed[-1]

                code = step2.pipeline(dataclasses.replace(console, confirm=confirm), options, lock=_held,
                                      narrow=lambda p: self._mine(p, entry)).run(plan2, state)
                if code != 0 and not any(confirmed):  # refused by the rails or declined: nothing was written
                    return Outcome(entry, "refused", f"{entry.label}: not rotated; nothing was changed")
                if code != 0:
                    return self._failed(entry, "2", code, AFTER_STEP["2"])
                step = "3"
                written = self._write(desired, entry, store, latest, value, username)
                if isinstance(written, Outcome):
                    return written
                step = "4"
                reloaded = manager.reload()
                entry4 = self._same(reloaded, entry)
                console.out(f"\nStep 4 of 4: apply {desired.source} as the store now reads it (the version before previous goes)")
                after4, state4, plan4 = self._file_plan(reloaded, entry4, store)
                keep = {latest.sha256 or "", new.sha256, written.sha256 or ""}
                code = 0
                if plan4.has_changes:
                    console4 = self._step4_console(entry4, keep)
                    code = after4.pipeline(console4, options, lock=_held, narrow=lambda p: self._mine(p, entry4)).run(
                        plan4, state4, what="the step 4 plan")
                else:
                    console.out("  nothing to remove")
                if code != 0:
                    return self._failed(entry, "4", code, AFTER_STEP["4"])
        except KeyboardInterrupt:
            console.err(f"interrupted during step {step} of the rotation of {entry.label}; run rotate again to finish")
            raise _Stopped() from None
        except (ReconcilerError, SecretError) as exc:  # an audit log, the file, a store that failed after step 2
            if step in ("1", "2"):
                raise  # before anything was written (a refusal, no terminal to confirm on): the error alone says it
            return self._failed(entry, step, 1, f"{exc}; {AFTER_STEP[step]}")
        removed = rotation.removed_hashes(plan4, entry4)
        gone = f"; removed {', '.join(f'sha256:{h[:8]}…' for h in removed)}" if removed else ""
        done = (f"{entry.label}: {where} {latest.name()} -> {written.name()} "
                f"({report.prefix(latest.sha256)} -> {report.prefix(written.sha256)}){gone}")
        try:
            report.audit_record(self.options.audit_log or self.manager.desired.audit_log, entry, where, latest, written, removed, rid, plan4)
        except ReconcilerError as exc:
            console.err(f"{entry.label}: rotated, but its audit line was not written: {exc}")
            return Outcome(entry, "failed", f"{done} (not in the audit log: {exc})")
        return Outcome(entry, "rotated", done)

    def _write(self, desired: Any, entry: Entry, store: writable.Store, latest: writable.Latest, value: str | None,
               username: str | None) -> writable.Latest | Outcome:
        """Step 3: the new version, with check-and-set on the one the rotation started from."""
        console = self.console
        where = store.where()
        if entry.strategy == Strategy.SERVICE:
            # The service made the token and step 2 wrote it to the sink; the record names it `current` now.
            for name in entry.instances:
                providers.for_instance(desired, name).promote(name, entry.user, entry.token.id)
            written = store.latest(())
            console.out(f"\nStep 3 of 4: the service made the token and {where} took it ({written.name() if written else '?'})")
            return written or latest
        assert value is not None
        extra = {entry.rotate.username_field: username} if entry.rotate.username_field and username else {}
        console.out(f"\nStep 3 of 4: write it as the next version of {where} (check-and-set on {latest.name()})")
        try:
            written = store.write(value, latest, extra)
        except CasConflict as exc:
            console.err(f"{entry.label}: {exc}")
            console.out("The new token was not stored: applying the store's latest instead (it removes the token just added).")
            code = self._apply_file(self.manager.reload(), entry, store)
            return Outcome(entry, "finished" if code == 0 else "failed",
                           f"{entry.label}: another writer stored a version first; applied it and removed this run's token")
        except SecretError as exc:
            if isinstance(exc, PermissionDenied) or not isinstance(exc, StoreError):  # refused: surely not written
                return self._failed(entry, "3", 1, f"{exc}; the new token is on the servers but in no store version: "
                                    "run rotate again, it removes it and starts again")
            # No answer, or one that is not KV v2: the store may have taken the write all the same.
            return self._failed(entry, "3", 1, f"{exc}; {AFTER_STEP['3']}")
        console.out(f"  {where}: {written.name()} written")
        return written

    # -- pieces ----------------------------------------------------------------------------------

    def _store(self, manager: "Manager", entry: Entry) -> writable.Store:
        timeout = max(manager.desired.instances[n].timeout_seconds for n in entry.instances)
        return writable.open_store(entry.rotate.store, timeout=max(timeout, 5.0))

    def _mine(self, plan: Plan, entry: Entry) -> Plan:
        return only_changes(plan, entry.keep, config=False)

    def _same(self, manager: "Manager", entry: Entry) -> Entry:
        """The entry as a reloaded file has it (the same user and id)."""
        for e in self._entries(manager):
            if e.user == entry.user and e.token.id == entry.token.id and e.sentinel == entry.sentinel:
                return e
        raise ReconcilerError(f"{entry.label} is no longer in {manager.desired.source}")

    def _settle(self, manager: "Manager", entry: Entry, latest: writable.Latest) -> str | None:
        if entry.strategy != Strategy.SERVICE or self.request.dry_run:
            return None
        result = None
        for name in entry.instances:
            instance = manager.desired.instances[name]
            result = providers.for_instance(manager.desired, name).settle(instance, entry.user, entry.token.id, latest.sha256) or result
        if result:
            why = "its value is the store's latest" if result == "promoted" else "its value is in no store version"
            self.console.out(f"{entry.label}: a new token an earlier run made was {result} ({why})")
        return result

    def _file_plan(self, manager: "Manager", entry: Entry, store: writable.Store) -> tuple["Manager", Any, Plan]:
        """The file's own plan for the entry's user, read now; with the values of the store's older
        versions it removes where a provider deletes passwords by value."""
        state = manager.read(list(entry.instances))
        plan = self._mine(manager.plan(state), entry)
        if entry.strategy == Strategy.SERVICE:
            return manager, state, plan
        manager, plan = self._retire(manager, entry, plan, state, store.versions())
        return manager, state, plan

    @staticmethod
    def _by_value(manager: "Manager", entry: Entry) -> bool:
        """A provider of the entry removes a password only given its value (Redis Software), and the
        rotation removes one on its own (not by replacing it)."""
        return entry.strategy == Strategy.ADD and not all(
            providers.capabilities(manager.desired.instances[n].provider).token_hashes for n in entry.instances)

    def _retire(self, manager: "Manager", entry: Entry, plan: Plan, state: Any, held: dict[str, Any]) -> tuple["Manager", Plan]:
        if not self._by_value(manager, entry):
            return manager, plan
        retired = rotation.with_retired(manager.desired, entry, plan, held, today())
        if retired is None:
            return manager, plan
        manager = manager.derived(retired)
        return manager, self._mine(manager.plan(state), entry)

    def _converge(self, manager: "Manager", entry: Entry, plan: Plan, state: Any, latest: writable.Latest,
                  held: dict[str, Any], line: str) -> Outcome:
        """Only the file's own plan for the entry's user (under the same lock a rotation takes)."""
        manager, plan = self._retire(manager, entry, plan, state, held)
        if not plan.has_changes:
            return Outcome(entry, "finished", f"{entry.label}: {line}")
        if self.request.dry_run:
            self.console.out("\nThe file's own plan for this user:")
            self.console.present(plan)
            return Outcome(entry, "would-finish", f"{entry.label}: would apply the file's plan for this user first")
        with self._hold(manager, plan, latest):
            code = manager.pipeline(self.console, self.options, lock=_held, narrow=lambda p: self._mine(p, entry)).run(
                plan, state, present=True)
        if code != 0:
            return self._failed(entry, "0", code, "the file's plan for this user did not apply")
        return Outcome(entry, "finished", f"{entry.label}: {line}")

    def _apply_file(self, manager: "Manager", entry: Entry, store: writable.Store) -> int:
        """Step 4 when the store moved under this rotation (the lock is still held)."""
        entry = self._same(manager, entry)
        manager, state, plan = self._file_plan(manager, entry, store)
        if not plan.has_changes:
            self.console.out("  nothing to apply")
            return 0
        return manager.pipeline(self.console, self.options, lock=_held, narrow=lambda p: self._mine(p, entry)).run(
            plan, state, what="the store's latest version", present=True)

    def _step4_console(self, entry: Entry, keep: set[str]) -> Console:
        """Step 4 goes ahead on the rotation's confirmation when it only removes what a rotation
        removes; anything else is shown and asked about like any apply."""
        base = self.console

        def confirm(plan: Plan) -> bool:
            if rotation.only_removes(plan, entry, keep):
                return True
            base.out("Step 4 is not what was expected (the file or the servers changed meanwhile):")
            base.present(plan)
            return base.confirm(plan)

        return dataclasses.replace(base, confirm=confirm)

    @contextmanager
    def _hold(self, manager: "Manager", plan: Plan, latest: writable.Latest) -> Iterator[None]:
        """The instances the rotation writes, locked from its first write to its last. When another
        apply or rotate holds them, wait (random pauses, so two waiters don't collide again), then
        start again from a fresh read: everything may have moved meanwhile."""
        try:
            stack = manager.lock(plan)
        except LockError as exc:
            self.console.out(f"waiting for the instances: {exc}")
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                time.sleep(random.uniform(0.2, 1.0))
                try:
                    manager.lock(plan).close()
                    break
                except LockError:
                    if time.monotonic() > deadline:
                        raise
            raise _Restart(latest) from None
        with stack:
            yield

    def _failed(self, entry: Entry, step: str, code: int, what: str) -> Outcome:
        self.console.err(f"{entry.label}: rotation stopped at step {step}: {what}")
        if code == 130:
            raise _Stopped()
        return Outcome(entry, "failed", f"{entry.label}: stopped at step {step} ({what})")


def _held(plan: Plan) -> AbstractContextManager[None]:
    """The pipeline's lock while the rotation holds the instances itself."""
    return nullcontext()
