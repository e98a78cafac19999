"""`provider: memorystore`: Memorystore for Valkey token-based authentication through Google's
REST API (https://docs.cloud.google.com/memorystore/docs/valkey/reference/rest/v1/), with a
plain HTTPS client.

Calls (v1; every write returns a long-running Operation, polled with GET /v1/{operation} with
backoff from ~1 s to ~10 s, honouring Retry-After: the instance API's quota is 60 requests per
minute per project):
  GET    /v1/{instance}                                   Instance (authorizationMode, engineVersion)
  PATCH  /v1/{instance}?updateMask=authorizationMode      tried; authorization_mode is IMMUTABLE in
                                                          the proto (ForceNew in Terraform), so a
                                                          refusal says the instance must be recreated
  POST   /v1/{instance}:addTokenAuthUser                  {"tokenAuthUser": NAME}
                                                          (projects.locations.instances.addTokenAuthUser)
  GET    /v1/{instance}/tokenAuthUsers                    {"tokenAuthUsers": [...], "nextPageToken"}
  DELETE /v1/{instance}/tokenAuthUsers/{user}?force=true  force: the user may still have tokens
  POST   /v1/{user}:addAuthToken                          {"authToken": {}}: AuthToken.name is an
                                                          IDENTIFIER ("for Create methods name is
                                                          optional and unused") and AuthToken.token
                                                          is output only; the operation's response
                                                          is the TokenAuthUser, never the token
  GET    /v1/{user}/authTokens                            {"authTokens": [{name, createTime, state}]}
  GET    /v1/{user}/authTokens/{id}                       the token with its value (authTokens.get)
  DELETE /v1/{user}/authTokens/{id}

Authentication: `Authorization: Bearer <OAuth access token>` from `admin.secret` (e.g.
{env: GOOGLE_OAUTH_ACCESS_TOKEN} filled by `gcloud auth print-access-token`). google-auth's own
credential flows need network access to Google's token endpoint, so the reconciler takes a
ready access token instead and has no Google client library dependency.

How the file maps: each user is a token-auth user; each token is declared by id. The service
names the token itself; apply finds the new name (the user's token list before and after), reads
the token, writes its value to the token's `sink:` -- a file (mode 0600) or a new version of a
vault KV path (check-and-set, secrets/sinks.py) -- never into a plan,
an audit record or the terminal -- and records file id -> service name in
`<file>.memorystore.json` (no secret). A token whose value could not be written is deleted again.
The planner compares tokens by file id: their stand-in "sha256" is model.server_token_ref(user,
id); a service token the record does not know stands for itself (its name as id).

The v1 API has no per-user permission rules (ACL policies exist only as aclPolicies in v1beta),
so a user on a memorystore instance declaring `acl`/`roles` is a plan error (the file would
promise a restriction nobody enforces); `enabled: false` and certificates are plan errors for
the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Mapping
from urllib.parse import urlparse

from .. import acl
from ..audit import AuditLog
from ..errors import LiveError, PlanError, remember_secret
from ..model import DesiredState, Instance, User, server_token_ref
from ..plan import ConfigChange, Finding, FindingKind, InstancePlan, Plan, UserChange
from ..report import ApplyReport
from ..secrets import SecretError, sinks
from ..state import InstanceState, LiveState, LiveUser, NodeState
from . import common
from .base import Capabilities, Provider
from .http import Client, Deadline, HttpError, poll_delays, poll_until

NAME = "memorystore"
DEFAULT_URL = "https://memorystore.googleapis.com"
TOKEN_AUTH = "TOKEN_AUTH"  # Instance.authorizationMode for basic token-based authentication
MODE_PARAMETER = "authorizationMode"
QUOTA = (60, 60.0)  # the instance API's quota: 60 requests per minute per project
OPERATION_DEADLINE = 600.0  # seconds an operation may run before apply gives up on it
STAY = "open connections stay: the file names no data-plane nodes for CLIENT KILL USER"


@dataclass(frozen=True)
class MSNode(NodeState):
    resource: str = ""
    engine: str = ""
    authorization_mode: str = ""
    token_ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # user -> {stand-in hash: service name}
    unrecorded: tuple[str, ...] = ()  # file users with service tokens the record has no names for

    @property
    def label(self) -> str:
        return f"Memorystore for Valkey {self.engine or self.version}"


def _version(engine: str) -> str:
    """"VALKEY_8_0" -> "8.0"."""
    parts = [p for p in engine.split("_") if p.isdigit()]
    return ".".join(parts[:2]) if parts else "8.0"


def _last(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


class MemorystoreProvider(Provider):
    name = NAME
    capabilities = Capabilities(
        rules=False,
        token_hashes=False,
        token_secrets=False,
        server_generated_tokens=True,
        certificate_users=False,
        disable_users=False,
        topology=False,
        reasons={
            "token_hashes": "which generates token values itself: declare the token by id with sink: {file: PATH} (no secret or sha256)",
            "token_secrets": "which generates token values itself: declare the token by id with sink: {file: PATH} (no secret or sha256)",
        },
    )
    # memorystore/docs/valkey/supported-commands lists no ACL command (NOPERM for the rest), and
    # the v1 REST API (instances, tokenAuthUsers, authTokens, operations) has no ACL log.
    denials_unavailable = "Memorystore for Valkey refuses ACL commands and its API has no ACL log"

    def client(self, instance: Instance) -> Client:
        api = instance.api
        assert api is not None and api.instance
        if instance.admin.secret is None:
            raise LiveError(
                f"{instance.name}: provider memorystore needs admin.secret: an OAuth access token "
                "(e.g. {env: GOOGLE_OAUTH_ACCESS_TOKEN} filled by `gcloud auth print-access-token`)"
            )
        url = api.url or DEFAULT_URL
        return Client(
            url,
            where=f"{instance.name} {urlparse(url).netloc}",
            bearer=instance.admin.secret.reveal(),
            ca_file=api.ca_file,  # tls: is the data plane's
            timeout=instance.timeout_seconds,
            auth_hint="the access token in admin.secret is missing, expired or not allowed on this instance",
            rate_limit=QUOTA,
        )

    # -- read -----------------------------------------------------------------------------

    def read(self, instance: Instance) -> InstanceState:
        assert instance.api is not None and instance.api.instance
        resource = instance.api.instance
        http = self.client(instance)
        try:
            inst = http.get_existing(f"/v1/{resource}", f"{instance.name}: Memorystore instance {resource} does not exist (api.instance)")
            users: dict[str, LiveUser] = {}
            ids: dict[str, dict[str, str]] = {}
            record = common.load_record(self.desired.source, NAME).get(instance.name, {})
            unrecorded: list[str] = []
            for u in _pages(http, f"/v1/{resource}/tokenAuthUsers", "tokenAuthUsers"):
                name = _last(u.get("name", ""))
                tokens = token_refs(name, _pages(http, f"/v1/{u['name']}/authTokens", "authTokens"), record.get(name) or {})
                ids[name] = tokens
                if tokens and not record.get(name) and any(d.name == name for d in self.desired.users_for(instance.name)):
                    unrecorded.append(name)
                users[name] = LiveUser(name=name, enabled=True, nopass=False, hashes=tuple(sorted(tokens)), rules="")
        finally:
            http.close()
        engine = str(inst.get("engineVersion") or "VALKEY_8_0")
        version = _version(engine)
        return InstanceState(
            name=instance.name,
            nodes=(
                MSNode(
                    address=resource,
                    server="valkey",
                    version=version,
                    users=users,
                    command_table=acl.CommandTable.nearest("valkey", version).name,
                    admin_user="",
                    tls=True,
                    resource=resource,
                    engine=engine,
                    authorization_mode=str(inst.get("authorizationMode") or ""),
                    token_ids=ids,
                    unrecorded=tuple(unrecorded),
                ),
            ),
            topology="standalone",
        )

    # -- plan (pure) ----------------------------------------------------------------------

    def plan(self, live: LiveState, *, today: date, inventory: Any = None) -> tuple[InstancePlan, ...]:
        for name in live.instances:
            for u in self.desired.users_for(name):
                _check_user(name, u)
        return common.plan_with(self.desired, live, today, lambda u: u, refine)

    # -- apply ----------------------------------------------------------------------------

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        return common.apply_each(self, plan, audit, _Run)

    def verify(self, plan: Plan, *, today: date) -> None:
        common.verify_by_replan(self, plan, today)


def token_refs(user: str, listed: list[dict], known: Mapping[str, str]) -> dict[str, str]:
    """{stand-in hash: service token name} for a user's listed tokens; `known` (the record) maps
    the file's token ids to service names, and an unknown name stands for itself."""
    by_name = {v: k for k, v in known.items()}
    out = {}
    for t in listed:
        service = _last(t.get("name", ""))
        out[server_token_ref(user, by_name.get(service, service))] = service
    return out


def _pages(http: Client, path: str, key: str) -> list[dict]:
    out: list[dict] = []
    token = ""
    while True:
        page = http.get(path + (f"?pageToken={token}" if token else "")) or {}
        out.extend(page.get(key) or [])
        token = page.get("nextPageToken") or ""
        if not token:
            return out


def _check_user(instance: str, u: User) -> None:
    where = f"{instance}: user {u.name}"
    if u.rules.strip():
        raise PlanError(
            f"{where}: Memorystore token-auth users have no per-user permission rules in the v1 API "
            "(ACL policies are v1beta only); remove acl/roles for users on this instance (or scope them with instances:)"
        )
    if not u.enabled:
        raise PlanError(f"{where}: Memorystore token-auth users can't be disabled; remove the user (with prune: true) instead")
    if u.certificates:
        raise PlanError(f"{where}: Memorystore token-auth users log in with tokens only; remove certificates")


def refine(inst: InstancePlan, state: InstanceState, desired: DesiredState) -> InstancePlan:
    data_plane = bool(desired.instances[inst.name].nodes)
    nodes = []
    for node_plan, node in zip(inst.nodes, state.nodes, strict=True):
        assert isinstance(node, MSNode)
        config = tuple(node_plan.config)
        if node.authorization_mode != TOKEN_AUTH:
            # Tried although the v1 proto marks authorization_mode IMMUTABLE: a refusal says to recreate.
            via = "PATCH instance; immutable in the v1 API, a refusal means recreating the instance"
            config += (ConfigChange(MODE_PARAMETER, node.authorization_mode or "(unset)", TOKEN_AUTH, via=via),)
        changes = tuple(
            # No permission lines: the API has none to show (a create would list "-@all").
            replace(c, permissions=(), note=c.note or "token values are generated by the service and written to each token's sink")
            if c.action == "create"
            else replace(c, note="; ".join(x for x in (c.note, STAY) if x))
            if c.kill_sessions and not data_plane
            else c
            for c in node_plan.changes
        )
        nodes.append(replace(node_plan, changes=changes, config=config, persist="none"))
        if node.unrecorded:
            record = common.record_path(desired.source, NAME)
            inst = replace(
                inst,
                findings=inst.findings
                + tuple(
                    Finding(
                        FindingKind.RECORD_MISSING,
                        f"user {user}: {record} names none of the service's tokens, so they can't be matched to the "
                        "file's token ids; apply would replace them (new values to the sinks) -- restore the record to keep them",
                        inst.name,
                        user=user,
                    )
                    for user in node.unrecorded
                ),
            )
    return replace(inst, nodes=tuple(nodes), inventory=())


# -- execution --------------------------------------------------------------------------------


class _Run(common.ApiRun):
    def __init__(self, provider: MemorystoreProvider, instance: Instance, plan: InstancePlan, results: ApplyReport, audit: AuditLog | None):
        super().__init__(provider, instance, plan, results, audit)
        assert instance.api is not None and instance.api.instance
        self.resource = instance.api.instance

    def run(self) -> None:
        http = self.p.client(self.instance)
        node = self.plan.nodes[0]
        steps: list[tuple[str, str, Any]] = [("config", cc.parameter, cc) for cc in node.config]
        steps += [(c.action, c.user, c) for c in node.changes]
        self.part.left = [f"{a} {u}" for a, u, _ in steps]
        record = common.load_record(self.p.desired.source, NAME)
        self.names = record.setdefault(self.instance.name, {})  # user -> {file token id: service name}
        try:
            for action, user, item in steps:
                self.part.left.pop(0)
                change = item if isinstance(item, UserChange) else None
                try:
                    if isinstance(item, ConfigChange):
                        self._mode(http, item)
                    else:
                        self._user(http, item)
                        if item.kill_sessions:
                            self._kill(item.user)
                except (LiveError, OSError) as exc:
                    common.audit(self.audit, self.part, change, action, user, "failed", str(exc))
                    raise common.fail(self.results, self.part, f"{action} {user}", exc) from None
                common.audit(self.audit, self.part, change, action, user, "ok")
                self.part.done.append(f"{action} {user}")
                self.part.counts[action] = self.part.counts.get(action, 0) + 1
        finally:
            common.save_record(self.p.desired.source, NAME, record)
            http.close()

    def _mode(self, http: Client, item: ConfigChange) -> None:
        try:
            self._wait(http, http.request("PATCH", f"/v1/{self.resource}?updateMask={MODE_PARAMETER}", {MODE_PARAMETER: item.after}))
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

        from .redis import read as live

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

    def _wait(self, http: Client, op: Any) -> Any:
        """Poll a long-running Operation until done, with backoff (http.poll_delays); its
        `response`, or HttpError for its `error`."""
        if isinstance(op, dict):
            name = op.get("name")
            op = poll_until(
                lambda: http.get(f"/v1/{name}"), lambda o: not isinstance(o, dict) or bool(o.get("done")),
                deadline=Deadline.after(OPERATION_DEADLINE), delays=poll_delays(),
                stalled=lambda o: f"{self.instance.name}: operation {name} not done", first=op,
            )
        if isinstance(op, dict) and op.get("error"):
            err = op["error"]
            raise HttpError(f"{self.instance.name}: operation failed: {err.get('status') or err.get('code')}: {err.get('message', '')}")
        return op.get("response") if isinstance(op, dict) else None

    def _user(self, http: Client, c: UserChange) -> None:
        user_res = f"{self.resource}/tokenAuthUsers/{c.user}"
        if c.action == "delete":
            # DeleteTokenAuthUser fails while the user has tokens unless force=true.
            self._wait(http, http.request("DELETE", f"/v1/{user_res}?force=true"))
            self.names.pop(c.user, None)
            return
        if c.action == "create":
            self._wait(http, http.request("POST", f"/v1/{self.resource}:addTokenAuthUser", {"tokenAuthUser": c.user}))
        user = self.users[c.user]
        by_ref = {t.sha256: t for t in user.tokens}
        for t in c.tokens:
            if t.action == "add":
                self._add_token(http, c.user, user_res, by_ref[t.sha256])
        live: dict[str, str] | None = None
        for t in c.tokens:  # removals after additions: an app never has no token to move to
            if t.action == "remove":
                if live is None:
                    listed = _pages(http, f"/v1/{user_res}/authTokens", "authTokens")
                    live = token_refs(c.user, listed, self.names.get(c.user) or {})
                service = live.get(t.sha256)
                if service is None:
                    raise HttpError(f"{self.instance.name}: user {c.user}: token sha256:{t.prefix}… is not on the service any more; make a new plan")
                self._wait(http, http.request("DELETE", f"/v1/{user_res}/authTokens/{service}"))
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
            before = {_last(t.get("name", "")) for t in _pages(http, f"/v1/{user_res}/authTokens", "authTokens")}
            # AuthToken.name is an IDENTIFIER, unused on create: the service assigns it.
            self._wait(http, http.request("POST", f"/v1/{user_res}:addAuthToken", {"authToken": {}}))
            after = [t for t in _pages(http, f"/v1/{user_res}/authTokens", "authTokens") if _last(t.get("name", "")) not in before]
            if len(after) != 1:
                raise HttpError(
                    f"{self.instance.name}: user {user}: expected one new token after addAuthToken, found {len(after)}; "
                    "another client is changing this user's tokens -- run plan again"
                )
            created = _last(after[0].get("name", ""))
            value = (http.get(f"/v1/{user_res}/authTokens/{created}") or {}).get("token")
            if not value:
                raise HttpError(f"{self.instance.name}: the service returned no value for token {token.id} ({created})")
            remember_secret(value)
            try:
                sink.commit(value)
            except SecretError as exc:
                raise LiveError(f"{self.instance.name}: token {token.id} of user {user}: sink {token.sink.describe()}: {exc}") from None
        except BaseException:
            sink.abort()
            if created is not None:  # never a token on the service whose value no sink holds
                try:
                    self._wait(http, http.request("DELETE", f"/v1/{user_res}/authTokens/{created}"))
                except LiveError:
                    pass  # the next plan lists it as a token not in the file, to remove
            raise
        self.names.setdefault(user, {})[token.id] = created
