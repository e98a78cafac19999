"""`provider: redis-cloud`: ACL users, roles and Redis rules, the default user and the mTLS client
certificates of one Redis Cloud Pro database, through the Redis Cloud API (client.py).

API reference (openapi.json, "Version 1 Redis Cloud API"):
  /v1/acl/redisRules   GET {redisRules: [{id, name, acl, isDefault}]}; POST/PUT {name, redisRule}; DELETE
  /v1/acl/roles        GET {roles: [{id, name, redisRules: [{ruleName, databases: [{subscriptionId,
                       databaseId}]}]}]}; POST/PUT {name, redisRules}; DELETE
  /v1/acl/users        GET {users: [{id, name, role, status}]} (no password); POST {name, role, password};
                       PUT {role?, password?}; DELETE -- one role and one password per user
  /v1/subscriptions/{s}/databases/{d}
                       GET: the database; its `security.password` is the default user's password, so
                       read.py hashes it in memory and drops it at once (never printed or kept)
                       PUT: `password`, `enableDefaultUser`, `enableTls`, `clientTlsCertificates`
                       [{publicCertificatePEMString}] (an empty list removes mTLS; enableTls: false
                       erases the list); GET does not return the certificates

How the file maps (instance = one database, `api: {subscription, database}`):
  U's rules (roles + acl) -> Redis rule `reconciler-U` (the resolved rules)
  U on this database      -> role `reconciler-U`, whose rule entry lists this database;
                             enabled: false removes the database from it
  U's tokens              -> one Cloud ACL user per token, all with role `reconciler-U`: the token's
                             `username:` (default U); two tokens are the rotation pair
  default's token         -> the database password (PUT; old connections fail after rotation, so
                             the file must say api.allow_password_replace: true)
  client_certificates     -> clientTlsCertificates (the whole list)

The API never returns passwords (except the database's, which is not kept), so apply records
which token each Cloud user holds (token id and sha256, never a secret) and the certificate
fingerprints it sent in `<file>.redis-cloud.json` next to the file (mode 0600).

    client.py     the API client: API-key headers, the account's request budget, tasks polled to
                  completion, then each resource until `active` or gone
    accounts.py   names and accounts shared by reading and apply (Cloud ACL users are the account's)
    read.py       one database as the planner's live state (RCNode), with the record's passwords
    refine.py     the pure refinement of the planner's plan (Cloud users per token, what cuts connections)
    apply.py      each change as API tasks, in the order that never leaves an application without a login
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
from . import read
from .accounts import NAME
from .refine import refine


class RedisCloudProvider(Provider):
    name = NAME
    capabilities = Capabilities(
        token_hashes=False,  # the API takes the password itself
        certificate_users=False,  # certificates are per database (client_certificates), not per user
        topology=False,
        password_complexity=True,
        one_default_password=True,  # the database password
        password_pair=True,  # AclUserCreateRequest: one password per Cloud user
        reasons={"token_hashes": "whose API takes the password itself: give it as secret: {env|file}, not sha256"},
    )
    # The Cloud API's logs are account actions (/logs) and console sessions (/session-logs), not
    # denials; databases refuse ACL LOG (rs/references/compatibility/commands/server: "ACL LOG ❌").
    denials_unavailable = "Redis Cloud databases refuse ACL LOG and the Redis Cloud API has no ACL log"

    def read(self, instance: Instance) -> InstanceState:
        return read.read_database(self.desired, instance)

    def plan(self, live: LiveState, *, today: date, inventory: Any = None) -> tuple[InstancePlan, ...]:
        return managed.plan_with(self.desired, live, today, lambda u: u, lambda i, s, d: refine(i, s, d, today))

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        # imports requests: only files with a redis-cloud instance pay for it
        from .apply import Run

        return managed.apply_each(self, plan, audit, Run)

    def verify(self, plan: Plan, *, today: date) -> None:
        managed.verify_by_replan(self, plan, today)
