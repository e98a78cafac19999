"""The Redis Cloud API client: API-key headers, a request budget per account, async tasks.

Redis Cloud API reference (openapi.json, "Version 1 Redis Cloud API") and guides under
https://redis.io/docs/latest/operate/rc/api/:
  auth       every request carries `x-api-key` (account key) and `x-api-secret-key` (user key)
             (get-started/use-rest-api)
  rate       "a request limit of 400 requests per minute per Account API key" (use-rest-api);
             beyond it 429 Too Many Requests, which the reference also answers when "too many
             resources are concurrently created / updated / deleted in the account"; the 429 may
             carry the delay in `x-rate-limit-retry-after-seconds` (Redis support: "Troubleshooting
             429 Errors in Redis Cloud APIs")
  tasks      POST/PUT/DELETE answer a TaskStateUpdate {taskId, status, ...}; GET /v1/tasks/{taskId}
             moves received -> processing-in-progress -> processing-completed (response.resourceId)
             | processing-error (response.error, response.additionalInfo); one operation is
             processed at a time per account (get-started/process-lifecycle)
  provisioning
             "Asynchronous operations have two main phases: processing and provisioning. A resource
             is not available until both phases are complete." After processing-completed the
             resource is `pending` ("Provisioning is in progress"), then `active` ("Provisioning
             completed successfully"); a deleted one is `deleting` ("De-provisioning and deletion is
             in progress") until it is gone; `error` ("An error occurred during the provisioning
             phase") (get-started/process-lifecycle, "Provisioning state values"). The same states
             are the `status` of ACL rules, roles and users (rediscloud-go-api: StatusPending,
             StatusActive, StatusDeleting, StatusError), and the Terraform provider waits for each
             rule, role and user to be active after every create and update, and for a deleted one
             to answer 404 (RedisLabs/terraform-provider-rediscloud provider/resource_rediscloud_acl_
             {rule,role,user}.go: waitForAcl*ToBeActive, "Wait until it's really disappeared"); a
             database after an update until its status is active again
             (provider/pro/resource_rediscloud_pro_database.go: WaitForDatabaseToBeActive).
             Users answer GET /v1/acl/users/{id} (getUserByID); rules and roles have no GET by id
             and are found in their lists (rediscloud-go-api: "Get has to use the List behaviour").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ...audit import redact
from ...errors import LiveError
from ...model import SENSITIVE, Instance
from ...names import shown
from ..http import Budget, Client, Deadline, HttpError, backoff_base, budget, pause, poll_until, wait_state
from ..managed import api_host

RATE = (400, 60.0)  # requests per window (seconds) per account key
TASK_DEADLINE = 600.0  # seconds a task may take before apply stops (the service keeps working on it)
POLL_CAP = 5.0  # longest pause between two task polls
THROTTLE_ATTEMPTS = 6  # 429s waited out before the shared client's own retries take over
ACTIVE = "active"  # the provisioning state of a usable resource [lifecycle]
LISTS = {"user": ("/acl/users", "users"), "role": ("/acl/roles", "roles"), "rule": ("/acl/redisRules", "redisRules")}
NAMED = {"id": int, "name": str}  # [openapi] ACLUser, ACLRole, ACLRedisRule: integer id, string name


def listed(http: Client, kind: str) -> list[dict]:
    """The account's users, roles or rules, each checked to have the shape apply relies on (a role's
    rule entries list databases as objects)."""
    path, key = LISTS[kind]
    items = http.listing(path, key, NAMED)
    if kind == "role" and not all(
        isinstance(entries := r.get("redisRules") or [], list)
        and all(isinstance(e, dict) and isinstance(e.get("databases") or [], list)
                and all(isinstance(d, dict) for d in e.get("databases") or []) for e in entries)
        for r in items
    ):
        raise http.misshapen("GET", path, "`redisRules`: a list of objects listing `databases` as objects")
    return items


def lists(http: Client) -> tuple[list[dict], list[dict], list[dict]]:
    """Users, roles and rules of the account."""
    return listed(http, "user"), listed(http, "role"), listed(http, "rule")


def task_delays() -> Iterator[float]:
    """Pauses between polls of a task or a provisioning resource: from a fifth of the HTTP backoff
    (RECONCILER_HTTP_BACKOFF, 0.1 s by default) doubling up to POLL_CAP."""
    delay = max(backoff_base() / 5, 0.001)
    while True:
        yield delay
        delay = min(delay * 2, POLL_CAP)


def task_deadline() -> float:
    """RECONCILER_CLOUD_TASK_DEADLINE=SECONDS overrides how long apply waits for one task."""
    try:
        return max(0.0, float(os.environ.get("RECONCILER_CLOUD_TASK_DEADLINE", TASK_DEADLINE)))
    except ValueError:
        return TASK_DEADLINE


def rate() -> tuple[int, float]:
    """RECONCILER_CLOUD_RATE=N/SECONDS overrides the request budget (tests; accounts with other limits)."""
    raw = os.environ.get("RECONCILER_CLOUD_RATE", "")
    try:
        n, s = raw.split("/")
        return max(1, int(n)), max(0.001, float(s))
    except ValueError:
        return RATE


class TaskFailed(HttpError):
    """A task that ended in processing-error: the service's error code and text, no secrets."""


def _retry_after(resp: Any) -> float | None:
    """The delay a 429 announces (x-rate-limit-retry-after-seconds), at most a minute."""
    try:
        return min(60.0, max(0.0, float(resp.headers.get("x-rate-limit-retry-after-seconds", ""))))
    except (TypeError, ValueError):
        return None


def budget_for(base_url: str, account_key: str) -> Budget:
    """One budget per API and account key in this process: the limit is the account's, not one client's."""
    limit, window = rate()
    return budget(hashlib.sha256(f"{base_url}\n{account_key}".encode()).hexdigest(), limit, window)


class CloudClient(Client):
    def __init__(self, base_url: str, *, where: str, account_key: str, secret_key: str, ca_file: str | None, timeout: float):
        super().__init__(base_url, where=where, ca_file=ca_file, timeout=timeout, auth_hint="check admin.account_key and admin.secret")
        self.session.headers["x-api-key"] = account_key
        self.session.headers["x-api-secret-key"] = secret_key
        self.budget = budget_for(self.base, account_key)
        self.throttled = 0
        send = self.session.request

        def limited(method: str, url: str, **kw: Any) -> Any:
            # Every HTTP send, retries included, goes through the budget; a 429 is waited out with
            # a growing pause (the budget may be shared with other clients of the account).
            delay = max(backoff_base(), 0.001)
            for _ in range(THROTTLE_ATTEMPTS):
                self.budget.take()
                resp = send(method, url, **kw)
                if resp.status_code != 429:
                    return resp
                self.throttled += 1
                if pause(_retry_after(resp) or delay):
                    return resp  # stopped: the caller's own retry loop says so
                delay = min(delay * 2, self.budget.window)
            return resp

        self.session.request = limited  # type: ignore[method-assign,assignment]

    def write(self, method: str, path: str, body: Any = None, *, secrets: Iterable[str] = (), deadline: Deadline | None = None) -> Any:
        """One asynchronous call, its task waited for (by `deadline`, default task_deadline() from now):
        the task's resourceId. TaskFailed when processing failed. The resource it made or changed is
        usable only once it is provisioned too: see settle()."""
        hidden = [s for s in secrets if s]
        deadline = deadline or Deadline.after(task_deadline())
        answer = self.request(method, path, body, secrets=hidden) or {}
        if not isinstance(answer, dict):
            raise self.misshapen(method, path, "a TaskStateUpdate object")
        task_id = answer.get("taskId")
        if not task_id:
            return answer.get("response", {}).get("resourceId") if isinstance(answer.get("response"), dict) else None

        def processed(task: dict) -> bool:
            if task.get("status") != "processing-error":
                return task.get("status") == "processing-completed"
            resp = task.get("response")
            resp = resp if isinstance(resp, dict) else {}
            err = resp.get("error")
            error = err if isinstance(err, str) else str(err.get("type") or "") if isinstance(err, dict) else ""
            info = str(resp.get("additionalInfo") or (err.get("description", "") if isinstance(err, dict) else ""))
            text = f"{self.where}: {method} {path}: task {task_id} failed: {error or 'processing-error'}" + (f": {info}" if info else "")
            for s in hidden:
                text = text.replace(s, SENSITIVE)
            raise TaskFailed(redact(" ".join(text.split()))[:500], code=error)

        task = poll_until(
            lambda: self.get_object(f"/tasks/{task_id}"), processed, deadline=deadline, delays=task_delays(),
            stalled=lambda t: f"{self.where}: {method} {path}: task {shown(str(task_id))} still {shown(str(t.get('status')))}", first=answer,
        )
        response = task.get("response")
        return response.get("resourceId") if isinstance(response, dict) else None

    # -- provisioning: a resource is usable when it reads `active` ([lifecycle]) --------------

    def status(self, kind: str, ident: int | str | tuple[int, int]) -> str | None:
        """The provisioning status of one resource; None when it is gone. Users answer GET
        /acl/users/{id} (404 when gone); rules and roles have no GET by id, so they are looked up
        in their lists (as the Terraform provider does); a database answers its own GET."""
        if kind == "database":
            assert isinstance(ident, tuple)
            return self.status_of(f"/subscriptions/{ident[0]}/databases/{ident[1]}")
        if kind == "user" and isinstance(ident, int):
            return self.status_of(f"/acl/users/{ident}")
        for item in listed(self, kind):
            if ident in (item.get("id"), item.get("name")):
                return str(item.get("status") or "")
        return None

    def settle(self, kind: str, ident: int | str | tuple[int, int], label: str, *, gone: bool = False, deadline: Deadline | None = None) -> None:
        """Wait until the resource is usable (`active`) or, with gone=True, deleted: within
        `deadline` (default task_deadline() from now), polled with the tasks' backoff."""
        deadline = deadline or Deadline.after(task_deadline())
        wait_state(
            lambda: self.status(kind, ident), want=None if gone else ACTIVE, what=f"{self.where}: {label}",
            deadline=deadline, delays=task_delays(),
        )


def connect(instance: Instance) -> CloudClient:
    """The API client for one instance, with the account key and user key the file's admin names."""
    api, admin = instance.api, instance.admin
    assert api is not None and api.url
    if admin.account_key is None or admin.secret is None:
        raise LiveError(f"{instance.name}: admin.account_key and admin.secret are needed to reach the Redis Cloud API")
    return CloudClient(
        api.url,
        where=f"{instance.name} {api_host(api.url)}",
        account_key=admin.account_key.reveal(),
        secret_key=admin.secret.reveal(),
        ca_file=api.ca_file,
        timeout=instance.timeout_seconds,
    )
