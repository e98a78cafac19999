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
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from typing import Any

from ..audit import redact
from ..model import SENSITIVE
from .http import Budget, Client, HttpError, backoff_base, budget

RATE = (400, 60.0)  # requests per window (seconds) per account key
TASK_DEADLINE = 600.0  # seconds a task may take before apply stops (the service keeps working on it)
POLL_CAP = 5.0  # longest pause between two task polls
THROTTLE_ATTEMPTS = 6  # 429s waited out before the shared client's own retries take over


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
                time.sleep(_retry_after(resp) or delay)
                delay = min(delay * 2, self.budget.window)
            return resp

        self.session.request = limited  # type: ignore[method-assign,assignment]

    def write(self, method: str, path: str, body: Any = None, *, secrets: Iterable[str] = ()) -> Any:
        """One asynchronous call, waited for: the task's resourceId. TaskFailed when processing failed."""
        hidden = [s for s in secrets if s]
        answer = self.request(method, path, body, secrets=hidden) or {}
        task_id = answer.get("taskId")
        if not task_id:
            return answer.get("response", {}).get("resourceId") if isinstance(answer.get("response"), dict) else None
        start, deadline = time.monotonic(), task_deadline()
        delay = max(backoff_base() / 5, 0.001)
        while True:
            task = self.get(f"/tasks/{task_id}") or {}
            status = task.get("status")
            if status == "processing-completed":
                return (task.get("response") or {}).get("resourceId")
            if status == "processing-error":
                resp = task.get("response") or {}
                err = resp.get("error")
                error = err if isinstance(err, str) else str((err or {}).get("type") or "")
                info = str(resp.get("additionalInfo") or (err.get("description", "") if isinstance(err, dict) else ""))
                text = f"{self.where}: {method} {path}: task {task_id} failed: {error or 'processing-error'}" + (f": {info}" if info else "")
                for s in hidden:
                    text = text.replace(s, SENSITIVE)
                raise TaskFailed(redact(" ".join(text.split()))[:500])
            if time.monotonic() - start > deadline:
                raise HttpError(
                    f"{self.where}: {method} {path}: task {task_id} still {status} after {deadline:g} s "
                    "(the service keeps processing it; run plan again later)"
                )
            time.sleep(delay)
            delay = min(delay * 2, POLL_CAP)
