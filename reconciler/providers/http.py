"""A small JSON-over-HTTPS client for the managed-service providers (uses `requests`).

Retries with exponential backoff where a retry cannot do a write twice: connection refused
and 429/502/503/504 (the request did not reach the service's backend) for every method; 500
and read timeouts for GET only. A `Retry-After` header (seconds) lengthens the wait to what the
service asked for. A caller may also retry 409 Conflict until a deadline (`conflict_deadline`:
Redis Software answers 409 while a database change is pending and documents "reattempt later").
Every failure becomes one LiveError line naming the instance, method and path -- never a
request body, and any secret the request carried is scrubbed from what the service answered.

`poll_delays()` is the backoff long-running operations are polled with (start ~1 s, cap ~10 s),
which keeps an apply within per-minute API quotas; `rate_limit` makes a client wait rather
than send more requests in a window than a quota allows.

`poll_until()` is the one wait every managed provider uses (an operation until done, an action
until completed, a task until processed) and `wait_state()` the one "until the resource is
usable" on top of it: until it reads a status (e.g. `active`), or until it is gone (404, or no
longer listed). A change is done when the service says its result is usable, not when the
request was accepted.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TypeVar

import requests

from .. import interrupt
from ..audit import redact
from ..errors import LiveError
from ..model import SENSITIVE
from ..names import shown

T = TypeVar("T")

RETRY_ANY = frozenset({429, 502, 503, 504})
RETRY_GET = RETRY_ANY | {500}
ATTEMPTS = 4


def _env_seconds(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def poll_delays() -> Iterator[float]:
    """Seconds between polls of a long-running operation: doubling from RECONCILER_POLL_START
    (default 1 s) up to RECONCILER_POLL_CAP (default 10 s); the overrides exist for tests."""
    delay = _env_seconds("RECONCILER_POLL_START", 1.0)
    cap = max(delay, _env_seconds("RECONCILER_POLL_CAP", 10.0))
    while True:
        yield delay
        delay = min(cap, delay * 2 if delay else cap)


def pause(seconds: float) -> bool:
    """Sleep `seconds`, or less: True when a stop request (SIGINT/SIGTERM during apply) came first,
    so a Ctrl-C during a long wait for the service is answered at once, not after it."""
    return interrupt.REQUESTED.wait(seconds) if seconds > 0 else interrupt.REQUESTED.is_set()


def check_stop() -> None:
    """Between two changes of a managed apply: stop here when a stop was requested."""
    if interrupt.REQUESTED.is_set():
        raise HttpError("interrupted before it was sent")


@dataclass(frozen=True)
class Deadline:
    """When a wait gives up (time.monotonic()), and the seconds it was given (for the message)."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)


def poll_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    deadline: Deadline,
    delays: Iterator[float],
    stalled: Callable[[T], str],
    first: Any = None,
) -> T:
    """Call `probe` until `done(result)`, sleeping the next of `delays` between calls; HttpError
    "<stalled(last result)> after N s (...run plan again later)" when the next sleep would pass
    the deadline. `first`: an answer already in hand (the request's own), checked before any
    probe. `probe` and `done` raise for what ends the wait early (a failed operation)."""
    value: Any = probe() if first is None else first
    while True:
        if done(value):
            return value
        delay = next(delays)
        if time.monotonic() + delay > deadline.at:
            raise HttpError(f"{stalled(value)} after {deadline.seconds:g} s (the service keeps working on it; run plan again later)")
        if pause(delay):
            raise HttpError(f"{stalled(value)} when the run was interrupted (the service keeps working on it)")
        value = probe()


def wait_state(
    probe: Callable[[], str | None],
    *,
    want: str | None,
    what: str,
    deadline: Deadline,
    delays: Iterator[float],
    failed: Collection[str] = ("error",),
) -> None:
    """Wait until a resource is usable: `probe` reads its status (None once it answers 404 or is no
    longer listed) until it is `want`, or with want=None until it is gone. A status in `failed`
    stops the wait at once, and so does a resource that vanishes while it is awaited."""

    def done(status: str | None) -> bool:
        if status == want:
            return True
        if status is None:
            raise HttpError(f"{what} is gone (404) while waiting for it to be {want}")
        if status in failed:
            raise HttpError(f"{what} is in status {status} on the service (its provisioning failed)")
        return False

    # the status is the service's text: shown escaped (a lying service's control characters stay inert)
    poll_until(probe, done, deadline=deadline, delays=delays, stalled=lambda status: f"{what} still {shown(str(status))}")


class Budget:
    """A sliding window of request times: wait before a request that would exceed the budget."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.sent: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def take(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                while self.sent and now - self.sent[0] >= self.window:
                    self.sent.popleft()
                if len(self.sent) < self.limit:
                    self.sent.append(now)
                    return
                time.sleep(self.window - (now - self.sent[0]))


_BUDGETS: dict[tuple[str, int, float], Budget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget(key: str, limit: int, window: float) -> Budget:
    """The process's one budget for `key` (an API, or an API and account): a quota belongs to
    the service's caller, not to one client object."""
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault((key, limit, window), Budget(limit, window))

MAX_RETRY_AFTER = 60.0  # never wait longer than this on one Retry-After


def retry_after(resp: requests.Response) -> float | None:
    """A Retry-After header given in seconds (RFC 9110 10.2.3); None when absent or a date."""
    value = resp.headers.get("Retry-After") if resp is not None else None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def backoff_base() -> float:
    """Seconds before the first retry (doubled each time); RECONCILER_HTTP_BACKOFF overrides (tests)."""
    try:
        return max(0.0, float(os.environ.get("RECONCILER_HTTP_BACKOFF", "0.5")))
    except ValueError:
        return 0.5


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class HttpError(LiveError):
    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code  # the service's error code (`error_code`, or Google's `status`)


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        where: str,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
        ca_file: str | None = None,
        cert: tuple[str, str] | None = None,
        timeout: float = 5.0,
        auth_hint: str = "check admin.username and admin.secret",
        rate_limit: tuple[int, float] | None = None,
    ):
        self.base = base_url.rstrip("/")
        self.where = where  # "rs-prod https://127.0.0.1:9443"
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc credentials picked up from the environment
        if basic is not None:
            self.session.auth = basic
        if bearer is not None:
            self.session.headers["Authorization"] = f"Bearer {bearer}"
        self.session.headers["Accept"] = "application/json"
        self.session.verify = ca_file if ca_file else True
        if cert is not None:
            self.session.cert = cert
        self.timeout = timeout
        self.auth_hint = auth_hint
        # (requests, seconds): never more than that many requests in any such window (an API quota),
        # counted over every client of this process that talks to the same API.
        self.rate_limit = rate_limit
        self._budget = budget(self.base, *rate_limit) if rate_limit else None

    def close(self) -> None:
        self.session.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def get_object(self, path: str) -> dict:
        """GET `path`, which the API documents as a JSON object ({} when the answer is empty)."""
        answer = self.get(path)
        if answer is None:
            return {}
        if not isinstance(answer, dict):
            raise self.misshapen("GET", path, "a JSON object")
        return answer

    def listing(self, path: str, key: str | None, fields: dict[str, type]) -> list[dict]:
        """GET `path`, a JSON object whose `key` lists objects (key None: a JSON array of them),
        checked by objects()."""
        return self.objects(self.get(path) if key is None else self.get_object(path).get(key), path, key, fields)

    def objects(self, items: Any, path: str, key: str | None, fields: dict[str, type]) -> list[dict]:
        """`items` (the `key` of an answer to GET `path`, or the whole answer; None is none), each an
        object with `fields` of those types (ids that are numbers, names that are strings): what
        the planner and the writes rely on. A listing read page by page checks each page."""
        if items is None:
            return []
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and all(isinstance(item.get(f), t) and not isinstance(item.get(f), bool) for f, t in fields.items())
            for item in items
        ):
            kinds = "".join(f"{', ' if i else ' with '}{f}: {'number' if t is int else 'string'}" for i, (f, t) in enumerate(fields.items()))
            raise self.misshapen("GET", path, f"{f'`{key}`: ' if key else ''}a list of objects{kinds}")
        return items

    def misshapen(self, method: str, path: str, expected: str) -> HttpError:
        """A 2xx answer that is not what the API documents (a proxy's page, another service, a lying
        server): one line, nothing of the answer repeated."""
        return HttpError(f"{self.where}: {method} {path}: the answer is not what the API documents (expected {expected}); check api.url")

    def status_of(self, path: str, key: str = "status") -> str | None:
        """The `key` field of the resource at `path` (its provisioning status); None when it answers 404.
        Nothing else of the answer is kept (a database's answer may carry a password)."""
        try:
            answer = self.get(path)
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise
        return str(answer.get(key) or "") if isinstance(answer, dict) else ""

    def get_existing(self, path: str, missing: str, expected: str = "a JSON object") -> dict:
        """GET `path`, a resource the API documents as an object (`expected` names it); 404 means
        the file names something the service does not have: LiveError(missing)."""
        try:
            answer = self.get(path)
        except HttpError as exc:
            if exc.status == 404:
                raise LiveError(missing) from None
            raise
        if not isinstance(answer, dict):
            raise self.misshapen("GET", path, expected)
        return answer

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        secrets: Iterable[str] = (),
        conflict_deadline: float | None = None,
    ) -> Any:
        """Send one request (retrying as the module docstring says); the decoded JSON body, or None.
        `conflict_deadline` (time.monotonic()): retry 409 Conflict with backoff until then."""
        hidden = [s for s in secrets if s]
        url = self.base + path
        delay = backoff_base()
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= ATTEMPTS
            wait = delay
            try:
                self._pace()
                resp = self.session.request(method, url, json=body, timeout=self.timeout)
            except requests.exceptions.SSLError as exc:
                raise HttpError(f"{self.where}: TLS failed on {method} {path}: {_first_line(exc, hidden)}") from None
            except requests.exceptions.ConnectTimeout:
                if last:
                    raise HttpError(f"{self.where}: {method} {path}: connect timed out after {self.timeout:g} s ({ATTEMPTS} attempts)") from None
            except requests.exceptions.ReadTimeout:
                # The service may have done a write; only a read is repeated.
                if method != "GET" or last:
                    raise HttpError(
                        f"{self.where}: {method} {path}: no answer within {self.timeout:g} s"
                        + ("" if method == "GET" else " (the change may or may not have been made; run plan again)")
                    ) from None
            except requests.exceptions.ConnectionError as exc:
                if last:
                    raise HttpError(f"{self.where}: {method} {path}: cannot connect ({_first_line(exc, hidden)})") from None
            else:
                retryable = RETRY_GET if method == "GET" else RETRY_ANY
                asked = retry_after(resp)
                if resp.status_code in retryable and not last:
                    wait = max(delay, asked or 0.0)
                elif (
                    resp.status_code == 409
                    and conflict_deadline is not None
                    and time.monotonic() + max(delay, asked or 0.0) < conflict_deadline
                ):
                    wait = max(delay, asked or 0.0, 0.01)
                    attempt = min(attempt, ATTEMPTS - 1)  # conflicts are bounded by the deadline, not attempts
                else:
                    return self._result(method, path, resp, hidden, attempt)
            if pause(wait):
                raise HttpError(f"{self.where}: {method} {path}: interrupted while waiting to send it again")
            delay = min(delay * 2, 10.0) if delay else 0.0

    def _pace(self) -> None:
        """Wait until one more request fits in the rate limit's window."""
        if self._budget is not None:
            self._budget.take()

    def _result(self, method: str, path: str, resp: requests.Response, hidden: list[str], attempt: int = 1) -> Any:
        if 200 <= resp.status_code < 300:
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                raise HttpError(f"{self.where}: {method} {path}: answer is not JSON (HTTP {resp.status_code})") from None
        code, message = _error_fields(resp)
        reason = _REASONS.get(resp.status_code, resp.reason or "")
        text = f"{self.where}: HTTP {resp.status_code} {reason} on {method} {path}"
        if code or message:
            text += ": " + ": ".join(x for x in (code, message) if x)
        if resp.status_code == 401:
            text += f" ({self.auth_hint})"
        elif attempt > 1:
            text += f" (after {attempt} attempts)"
        raise HttpError(_scrub(text, hidden), resp.status_code, code)


def _error_fields(resp: requests.Response) -> tuple[str, str]:
    try:
        data = resp.json()
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    if isinstance(data.get("error"), dict):  # Google: {"error": {"code", "message", "status"}}
        err = data["error"]
        return str(err.get("status") or ""), str(err.get("message") or "")[:300]
    return str(data.get("error_code") or ""), str(data.get("message") or data.get("description") or "")[:300]


def _scrub(text: str, hidden: list[str]) -> str:
    for s in hidden:
        text = text.replace(s, SENSITIVE)
    return redact(" ".join(text.split()))


def _first_line(exc: BaseException, hidden: list[str]) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _scrub(text, hidden)[:300]
