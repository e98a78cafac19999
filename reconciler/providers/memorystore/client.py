"""Reaching Memorystore for Valkey's REST API v1: a bearer token (a ready OAuth access token from
`admin.secret`), every request within the instance API's quota, list pages followed, and
long-running operations polled until done (providers/http.py does the retries and the waits)."""

from __future__ import annotations

from typing import Any

from ...errors import LiveError
from ...model import Instance
from ...names import printable
from ..http import Client, Deadline, HttpError, poll_delays, poll_until
from ..managed import api_host

DEFAULT_URL = "https://memorystore.googleapis.com"
QUOTA = (60, 60.0)  # the instance API's quota: 60 requests per minute per project
OPERATION_DEADLINE = 600.0  # seconds an operation may run before apply gives up on it


def last(name: str) -> str:
    """The last part of a resource name (`projects/.../tokenAuthUsers/app` -> `app`)."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def connect(instance: Instance) -> Client:
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
        where=f"{instance.name} {api_host(url)}",
        bearer=instance.admin.secret.reveal(),
        ca_file=api.ca_file,  # tls: is the data plane's
        timeout=instance.timeout_seconds,
        auth_hint="the access token in admin.secret is missing, expired or not allowed on this instance",
        rate_limit=QUOTA,
    )


def pages(http: Client, path: str, key: str) -> list[dict]:
    """Every item of a listed collection, page after page (`nextPageToken`)."""
    out: list[dict] = []
    token = ""
    seen: set[str] = set()
    while True:
        page = http.get_object(path + (f"?pageToken={token}" if token else ""))
        out.extend(http.objects(page.get(key) or [], path, key, {"name": str}))
        token = str(page.get("nextPageToken") or "")
        if not token:
            return out
        if token in seen:  # a listing that would never end
            raise http.misshapen("GET", path, "a nextPageToken not given before")
        seen.add(token)


def wait_operation(http: Client, op: Any, where: str) -> Any:
    """Poll a long-running Operation until done, with backoff (http.poll_delays); its `response`,
    or HttpError for its `error`. `where` is the instance's name."""
    if op is not None and not isinstance(op, dict):
        raise HttpError(f"{http.where}: the answer to a write is not an Operation (expected a JSON object); check api.url")
    if isinstance(op, dict):
        name = op.get("name")
        op = poll_until(
            lambda: http.get_object(f"/v1/{name}"), lambda o: bool(o.get("done")),
            deadline=Deadline.after(OPERATION_DEADLINE), delays=poll_delays(),
            stalled=lambda o: f"{where}: operation {name} not done", first=op,
        )
    if isinstance(op, dict) and op.get("error"):
        err = op["error"] if isinstance(op["error"], dict) else {"message": str(op["error"])}
        raise HttpError(printable(f"{where}: operation failed: {err.get('status') or err.get('code') or 'error'}: {err.get('message', '')}"))
    return op.get("response") if isinstance(op, dict) else None
