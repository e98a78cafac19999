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

    client.py     reaching the API (a bearer token, within the project's quota); pages; operations
                  polled until done
    read.py       one instance as the planner's live state (MSNode), tokens named by the record
    refine.py     the pure refinement (what the v1 API can't express is a plan error)
    apply.py      users and tokens, each token's value to its sink; CLIENT KILL USER on the data plane
    rotation.py   the record's names for a rotating token's new and previous values (promote, settle)
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ...audit import AuditLog
from ...model import Instance
from ...plan import InstancePlan, Plan
from ...report import ApplyReport
from ...state import InstanceState, LiveState
from .. import managed
from ..base import Capabilities, Provider
from . import read, rotation
from .apply import Run
from .read import NAME
from .refine import check_user, refine


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

    def read(self, instance: Instance) -> InstanceState:
        return read.read_instance(self.desired, instance)

    def plan(self, live: LiveState, *, today: date, inventory: Any = None) -> tuple[InstancePlan, ...]:
        for name in live.instances:
            for u in self.desired.users_for(name):
                check_user(name, u)
        held: dict[str, set[str]] = {}
        for inst in live.instances.values():
            for node in inst.nodes:
                for name, lu in node.users.items():
                    held.setdefault(name, set()).update(lu.hashes)
        return managed.plan_with(self.desired, live, today, lambda u: rotation.with_rotation_names(u, held.get(u.name, set())), refine)

    def promote(self, instance: str, user: str, token_id: str) -> None:
        rotation.promote(self.desired, instance, user, token_id)

    def settle(self, instance: Instance, user: str, token_id: str, stored_sha256: str | None) -> str | None:
        return rotation.settle(self.desired, instance, user, token_id, stored_sha256)

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        return managed.apply_each(self, plan, audit, Run)

    def verify(self, plan: Plan, *, today: date) -> None:
        managed.verify_by_replan(self, plan, today)
