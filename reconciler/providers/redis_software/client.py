"""Reaching a Redis Software cluster's REST API: Basic Auth with the file's admin (or a client
certificate when certificate authentication is set up), and waiting for the asynchronous
database actions a change starts (requests/actions). Retries, backoff and the waits themselves
are the shared HTTP client's (providers/http.py)."""

from __future__ import annotations

from ...model import Instance
from ..http import Client, Deadline, HttpError, poll_delays, poll_until
from ..managed import api_host


def connect(instance: Instance) -> Client:
    api = instance.api
    assert api is not None and api.url  # config.load checked it
    basic = None
    if instance.admin.secret is not None:
        basic = (instance.admin.username, instance.admin.secret.reveal())
    tls = instance.tls
    cert = (tls.cert_file, tls.key_file) if tls and tls.cert_file and tls.key_file else None
    return Client(
        api.url,
        where=f"{instance.name} {api_host(api.url)}",
        basic=basic,
        ca_file=tls.ca_file if tls else None,
        cert=cert,
        timeout=instance.timeout_seconds,
    )


def wait_action(http: Client, action: str, deadline: Deadline, what: str) -> None:
    """requests/actions: GET /v1/actions/{uid} until its status is completed (objects/action:
    queued -> starting -> running -> completed; failed, cancelled and aborted end it too).
    `what` names the change: "<instance> <host>: database 1 update (action <uid>)"."""

    def done(state: dict) -> bool:
        status = str(state.get("status") or "")
        if status in ("failed", "cancelled", "aborted"):
            raise HttpError(f"{what} {status}: {state.get('error') or state.get('message') or ''}".strip())
        return status == "completed"

    poll_until(
        lambda: http.get_object(f"/v1/actions/{action}"), done, deadline=deadline, delays=poll_delays(),
        stalled=lambda state: f"{what} still {state.get('status') or 'running'}",
    )
