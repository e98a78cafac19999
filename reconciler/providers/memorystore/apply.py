"""One apply of one Memorystore for Valkey instance: the authorization mode, then each user's
change -- tokens added (each value read once and written to its sink, never anywhere else)
before tokens are removed, and CLIENT KILL USER on the data-plane nodes the file names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...audit import AuditLog
from ...errors import LiveError, remember_secret
from ...model import Instance
from ...names import printable
from ...plan import ConfigChange, InstancePlan, UserChange
from ...report import ApplyReport
from ...secrets import SecretError, sinks
from .. import managed
from ..base import Provider
from ..http import Client, HttpError, check_stop
from .client import connect, last, pages, wait_operation
from .read import MODE_PARAMETER, NAME, token_refs


class Run(managed.ApiRun):
    def __init__(self, provider: Provider, instance: Instance, plan: InstancePlan, results: ApplyReport, audit: AuditLog | None):
        super().__init__(provider, instance, plan, results, audit)
        assert instance.api is not None and instance.api.instance
        self.resource = instance.api.instance

    def run(self) -> None:
        http = connect(self.instance)
        node = self.plan.nodes[0]
        steps: list[tuple[str, str, Any]] = [("config", cc.parameter, cc) for cc in node.config]
        steps += [(c.action, c.user, c) for c in node.changes]
        self.part.left = [f"{a} {u}" for a, u, _ in steps]
        record = self.record = managed.load_record(self.p.desired.source, NAME)
        self.names = record.setdefault(self.instance.name, {})  # user -> {file token id: service name}
        try:
            for action, user, item in steps:
                self.part.left.pop(0)
                change = item if isinstance(item, UserChange) else None
                try:
                    check_stop()
                    if isinstance(item, ConfigChange):
                        self._mode(http, item)
                    else:
                        self._user(http, item)
                        if item.kill_sessions:
                            self._kill(item.user)
                except (LiveError, OSError) as exc:
                    managed.audit(self.audit, self.part, change, action, user, "failed", str(exc))
                    raise managed.fail(self.results, self.part, f"{action} {user}", exc) from None
                managed.audit(self.audit, self.part, change, action, user, "ok")
                self.part.done.append(f"{action} {user}")
                self.part.counts[action] = self.part.counts.get(action, 0) + 1
        finally:
            managed.save_record(self.p.desired.source, NAME, record)
            http.close()

    def _mode(self, http: Client, item: ConfigChange) -> None:
        try:
            wait_operation(http, http.request("PATCH", f"/v1/{self.resource}?updateMask={MODE_PARAMETER}", {MODE_PARAMETER: item.after}), self.instance.name)
        except HttpError as exc:
            if exc.status in (400, 412) or exc.code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
                raise HttpError(
                    f"{self.instance.name}: the service refused to change authorizationMode ({exc.code or exc.status}): it is "
                    "immutable on Memorystore instances -- recreate the instance with token-based authentication "
                    f"(authorizationMode {item.after}); the reconciler does not recreate instances"
                ) from None
            raise

    def _kill(self, user: str) -> None:
        """CLIENT KILL USER on every data-plane node: deleting a user or a token leaves its open
        connections alone (manage-basic-auth advises closing them)."""
        import redis

        from ..redis import read as live

        dp = self.instance.api.data_plane if self.instance.api else None
        if dp is None or not self.instance.nodes:
            return
        as_dp = replace(self.instance, admin=dp)
        for address in self.instance.nodes:
            client = live.connect(as_dp, address, timeout=self.instance.timeout_seconds)
            try:
                client.execute_command("CLIENT", "KILL", "USER", user)
            except (redis.RedisError, OSError) as exc:
                if "no such user" not in str(exc).lower():  # already gone: its connections went with it
                    raise LiveError(f"{self.instance.name} {address}: CLIENT KILL USER {user}: {exc}") from None
            finally:
                client.close()

    def _user(self, http: Client, c: UserChange) -> None:
        user_res = f"{self.resource}/tokenAuthUsers/{c.user}"
        if c.action == "delete":
            # DeleteTokenAuthUser fails while the user has tokens unless force=true.
            wait_operation(http, http.request("DELETE", f"/v1/{user_res}?force=true"), self.instance.name)
            self.names.pop(c.user, None)
            return
        if c.action == "create":
            wait_operation(http, http.request("POST", f"/v1/{self.resource}:addTokenAuthUser", {"tokenAuthUser": c.user}), self.instance.name)
        user = self.users[c.user]
        by_ref = {t.sha256: t for t in user.tokens}
        for t in c.tokens:
            if t.action == "add":
                self._add_token(http, c.user, user_res, by_ref[t.sha256])
        live: dict[str, str] | None = None
        for t in c.tokens:  # removals after additions: an app never has no token to move to
            if t.action == "remove":
                if live is None:
                    listed = pages(http, f"/v1/{user_res}/authTokens", "authTokens")
                    live = token_refs(c.user, listed, self.names.get(c.user) or {})
                service = live.get(t.sha256)
                if service is None:
                    raise HttpError(f"{self.instance.name}: user {c.user}: token sha256:{t.prefix}… is not on the service any more; make a new plan")
                wait_operation(http, http.request("DELETE", f"/v1/{user_res}/authTokens/{service}"), self.instance.name)
                known = self.names.get(c.user) or {}
                for fid in [k for k, v in known.items() if v == service]:
                    del known[fid]

    def _add_token(self, http: Client, user: str, user_res: str, token: Any) -> None:
        """addAuthToken, then the new token's value to its sink. The sink is made ready (a file
        opened 0600; a vault path read, its write permission checked) before the token exists; a
        token whose value could not be written is deleted again."""
        try:
            sink = sinks.prepare(token.sink, timeout=self.instance.timeout_seconds)
        except SecretError as exc:
            raise LiveError(f"{self.instance.name}: token {token.id} of user {user}: sink {token.sink.describe()}: {exc}") from None
        created: str | None = None
        try:
            before = {last(t.get("name", "")) for t in pages(http, f"/v1/{user_res}/authTokens", "authTokens")}
            # AuthToken.name is an IDENTIFIER, unused on create: the service assigns it.
            wait_operation(http, http.request("POST", f"/v1/{user_res}:addAuthToken", {"authToken": {}}), self.instance.name)
            after = [t for t in pages(http, f"/v1/{user_res}/authTokens", "authTokens") if last(t.get("name", "")) not in before]
            if len(after) != 1:
                raise HttpError(
                    f"{self.instance.name}: user {user}: expected one new token after addAuthToken, found {len(after)}; "
                    "another client is changing this user's tokens -- run plan again"
                )
            created = last(after[0].get("name", ""))
            value = http.get_object(f"/v1/{user_res}/authTokens/{created}").get("token")
            if not value or not isinstance(value, str):
                raise HttpError(f"{self.instance.name}: the service returned no value for token {token.id} ({printable(created)})")
            remember_secret(value)
            if token.succeeds:
                # A rotation's new token is named before its value reaches the sink: a run stopped
                # right after the sink took it leaves a token the next `rotate` can promote.
                self.names.setdefault(user, {})[token.id] = created
                managed.save_record(self.p.desired.source, NAME, self.record)
            try:
                sink.commit(value)
            except SecretError as exc:
                raise LiveError(f"{self.instance.name}: token {token.id} of user {user}: sink {token.sink.describe()}: {exc}") from None
        except BaseException:
            sink.abort()
            if created is not None:  # never a token on the service whose value no sink holds
                (self.names.get(user) or {}).pop(token.id, None)
                try:
                    wait_operation(http, http.request("DELETE", f"/v1/{user_res}/authTokens/{created}"), self.instance.name)
                except LiveError:
                    pass  # the next plan lists it as a token not in the file, to remove
            raise
        self.names.setdefault(user, {})[token.id] = created
