"""`provider: redis-software`: users, Redis ACLs, roles and passwords through the Redis Software
(Redis Enterprise) cluster REST API.

REST API references (https://redis.io/docs/latest/operate/rs/references/rest-api/):
  authentication   Basic Auth with a cluster user's username and password; 401 when wrong
                   (rest-api/#authentication); a client certificate when certificate
                   authentication is set up (security/certificates/certificate-based-authentication)
  users            GET/POST /v1/users, GET/PUT/DELETE /v1/users/{uid}   (requests/users)
                   user object: uid, name, email, auth_method ('regular' | 'certificate'),
                   certificate_subject_line (RFC 2253), role_uids, password_issue_date
                   (objects/user)
  versions         GET /v1/nodes: software_version of each node; which password calls a version
                   takes lives in versions.py (7.4: username + old_password; 7.8+: an admin
                   names the user and needs no old password; 7.8.2..7.8.6-118 and 7.22.0 builds
                   before 216 are refused: RS161290 changes the caller's password)
  passwords        requests/users/password:
                   POST   /v1/users/password  adds a password (7.4: authorized by old_password)
                   DELETE /v1/users/password {username, old_password}  deletes that password;
                          never the last one (cannot_delete_last_password)
                   PUT    /v1/users/password  replaces ALL passwords with the single new one
                   PUT    /v1/users/{uid} {password}  (objects/user: password) sets the password
                          when no existing one is known (7.4)
  default user     requests/bdbs/passwords: PUT/POST/DELETE /v1/bdbs/{uid}/passwords {password}:
                   the database's default user (AUTH <password>) -- not a /v1/users user.
                   rotate-passwords: "Password rotation does not work for the default user."
  redis_acls       GET/POST /v1/redis_acls, PUT/DELETE /v1/redis_acls/{uid}: {uid, name, acl}
                   (requests/redis_acls, objects/redis_acl)
  roles            GET/POST /v1/roles, DELETE /v1/roles/{uid}: {uid, name, management}
                   (requests/roles, objects/role)
  databases        GET/PUT /v1/bdbs/{uid}: roles_permissions [{role_uid, redis_acl_uid}] binds a
                   role to a Redis ACL on that database (objects/bdb). PUT is asynchronous: it
                   answers an action_uid, the database is active-change-pending and another PUT
                   gets 409 ("reattempt later", requests/bdbs); GET /v1/actions/{uid} tells when
                   the action is done (requests/actions). One PUT per database per apply.
  mTLS             GET /v1/cluster/certificates: a flat object, the CA under mtls_trusted_ca_cert
                   (requests/cluster/certificates); certificate users also need the database's
                   tls_mode enabled and enforce_client_authentication (objects/bdb).

How the file maps onto that model (one database per instance, `api.database`):
  user U                  -> a /v1/users user named U (auth_method regular, or certificate when
                             the user has `certificates:`; certificate_subject_line = the subject)
  U's rules (roles + acl) -> a redis_acl named `reconciler-U` holding the resolved rule string,
                             a role named `reconciler-U` (management: none) in U's role_uids,
                             and {role_uid, redis_acl_uid} in the database's roles_permissions
  enabled: false          -> that roles_permissions entry is removed (the user keeps its
                             passwords but has no access to the database)
  tokens                  -> the user's passwords (plaintext from the file's secret references)
  user `default`          -> the database's password (/v1/bdbs/{uid}/passwords): one token; setting
                             or replacing it is planned with a note that new connections need the
                             new token; more tokens, rules or enabled: false are plan errors
  certificate subjects    -> compared as parsed distinguished names (the service stores RFC 2253)

The API never returns passwords or their hashes, so which token hashes a user has is recorded
by apply in `<file>.redis-software.json` (token ids and sha256 only, never a secret), together
with the user's `password_issue_date`. When the service reports another issue date, the
passwords were changed outside the reconciler: the plan then says "replace all" and apply uses
PUT. The default user has no issue date: without a record its password is unknown and is set.

    client.py     reaching the REST API (Basic Auth or a client certificate); waiting for actions
    versions.py   what each cluster version's API takes, and which versions are refused
    rules.py      what the service refuses in users, Redis ACLs and passwords (validate)
    read.py       one database as the planner's live state (RSNode), with the record's tokens
    refine.py     the pure refinement of the planner's plan (certificates, default user, passwords)
    apply.py      one apply of one database, in the order that never leaves a user without a password
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

from ...audit import AuditLog
from ...model import Instance, User
from ...plan import InstancePlan, Plan
from ...report import ApplyReport
from ...state import InstanceState, LiveState
from .. import managed
from ..base import Capabilities, Provider
from . import read
from .apply import Run
from .read import NAME
from .refine import refine


class RedisSoftwareProvider(Provider):
    name = NAME
    capabilities = Capabilities(
        token_hashes=False,  # the password API needs plaintext
        topology=False,
        password_complexity=True,
        saved_plans=True,
        one_default_password=True,  # the database password (rotate-passwords: no rotation for the default user)
        reasons={
            "token_hashes": "whose password API needs the plaintext (to add a password next to an existing one and to "
            "delete one): give it as secret: {env|file}, not sha256",
        },
    )
    # The REST API's requests (rest-api/requests) have no ACL log (`logs` is the cluster's event
    # log), and databases refuse ACL LOG (references/compatibility/commands/server: "ACL LOG ❌").
    denials_unavailable = "Redis Software databases refuse ACL LOG and its REST API has no ACL log endpoint"

    def read(self, instance: Instance) -> InstanceState:
        return read.read_database(self.desired, instance)

    def plan(self, live: LiveState, *, today: date, inventory: Any = None) -> tuple[InstancePlan, ...]:
        def view(u: User) -> User:
            # Certificates are this provider's business (auth_method: certificate), not CONFIG mapping.
            return dataclasses.replace(u, certificates=()) if u.certificates else u

        return managed.plan_with(self.desired, live, today, view, refine)

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        return managed.apply_each(self, plan, audit, Run)

    def verify(self, plan: Plan, *, today: date) -> None:
        managed.verify_by_replan(self, plan, today)

