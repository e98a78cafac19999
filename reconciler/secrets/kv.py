"""A HashiCorp Vault / OpenBao KV version 2 store, through hvac: read a version with its
metadata, read a path's version history, write a new version with check-and-set.

The `vault:` source (vault.py), the vault sink (sinks.py) and rotation use this one API.

Where the store is comes only from the standard environment -- VAULT_ADDR, VAULT_TOKEN,
VAULT_NAMESPACE, VAULT_CACERT -- never from the desired-state file, so a changed file can't
send the token to another address. VAULT_SKIP_VERIFY is refused unless the operator also sets
RECONCILER_ALLOW_VAULT_SKIP_VERIFY=1. Redirects are not followed (requests would resend the
X-Vault-Token header to wherever a redirect points).

API (KV v2, https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2; OpenBao's is the same):
  GET  /v1/{mount}/data/{path}[?version=N]  {data: {data: {...}, metadata: {version, created_time,
                                            deletion_time, destroyed}}}; a deleted or destroyed
                                            version answers 404 with that metadata and data null
  GET  /v1/{mount}/metadata/{path}          {data: {current_version, oldest_version, max_versions,
                                            cas_required, versions: {"N": {created_time,
                                            deletion_time, destroyed}}}}
  POST /v1/{mount}/data/{path}              {data: {...}, options: {cas: N}}: written only while
                                            the current version is N (0: only if the path has no
                                            version); else 400 "check-and-set parameter did not
                                            match the current version"
hvac is imported when the first request is made, so a file without `vault:` never loads it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from ..bounded import Abandoned, call_within
from ..errors import remember_secret
from .base import SecretError

ADDR, TOKEN, NAMESPACE, CACERT, SKIP_VERIFY = "VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_SKIP_VERIFY"
ALLOW_SKIP_VERIFY = "RECONCILER_ALLOW_VAULT_SKIP_VERIFY"
DEFAULT_MOUNT = "secret"
DEFAULT_TIMEOUT = 10.0  # seconds per request when no run deadline applies (token new, sinks)


class StoreError(SecretError):
    """A KV request that failed; the message names the path (and version), never a value."""


class NotFound(StoreError):
    """No secret at the path (or no such version). `body`: the 404 answer, which for a deleted or
    destroyed version carries its metadata (never its data; never printed)."""

    def __init__(self, message: str, body: Any = None):
        super().__init__(message)
        self.body = body if isinstance(body, dict) else None


class VersionGone(StoreError):
    """The version exists in the metadata but was deleted or destroyed."""

    def __init__(self, message: str, info: "VersionInfo"):
        super().__init__(message)
        self.info = info


class PermissionDenied(StoreError):
    pass


class CasConflict(StoreError):
    """Another writer made a new version after ours was read: nothing was written."""


class Unavailable(StoreError):
    """The store can't be used at all (unreachable, sealed, no answer in time, not configured)."""

    def __init__(self, message: str):
        super().__init__(message, once=True)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "t", "yes", "y")


@dataclass(frozen=True)
class Connection:
    addr: str
    token: str = field(repr=False)
    namespace: str | None = None
    verify: bool | str = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Connection":
        addr = (environ.get(ADDR) or "").strip()
        if not addr:
            raise Unavailable(f"vault: {ADDR} is not set (the store's address comes from the environment, never from the file)")
        if not addr.startswith(("http://", "https://")):
            raise Unavailable(f"vault: {ADDR} must start with https:// or http://")
        token = (environ.get(TOKEN) or "").strip()
        if not token:
            raise Unavailable(f"vault: {TOKEN} is not set (e.g. export {TOKEN}=$(vault print token) after vault login)")
        remember_secret(token)  # never in any line this process prints
        verify: bool | str = True
        if _truthy(environ.get(SKIP_VERIFY)):
            if not _truthy(environ.get(ALLOW_SKIP_VERIFY)):
                raise Unavailable(
                    f"vault: {SKIP_VERIFY} is set: refusing to send {TOKEN} to a server whose certificate is not checked "
                    f"(set {CACERT} to its CA, or {ALLOW_SKIP_VERIFY}=1 to accept that)"
                )
            verify = False
        elif (environ.get(CACERT) or "").strip():
            verify = environ[CACERT].strip()
            if not os.path.isfile(verify) and not os.path.isdir(verify):
                raise Unavailable(f"vault: {CACERT}={verify} is not a file (the CA that signed the store's certificate)")
        namespace = (environ.get(NAMESPACE) or "").strip().strip("/") or None
        try:
            password = urlsplit(addr).password
        except ValueError:
            raise Unavailable(f"vault: {ADDR} is not a URL (e.g. https://vault.example.com:8200)") from None
        if password:
            remember_secret(unquote(password))  # a proxy's basic auth in the address: never printed either
        return cls(addr=addr.rstrip("/"), token=token, namespace=namespace, verify=verify)

    @property
    def shown(self) -> str:
        """The address for messages: without the password of a `user:password@` in it."""
        parts = urlsplit(self.addr)
        if parts.password is None:
            return self.addr
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"))


@dataclass(frozen=True)
class VersionInfo:
    version: int
    created: datetime | None
    deleted: datetime | None = None  # deletion_time: soft-deleted (undelete brings it back)
    destroyed: bool = False

    @property
    def readable(self) -> bool:
        return self.deleted is None and not self.destroyed


@dataclass(frozen=True)
class PathMetadata:
    current_version: int
    oldest_version: int
    max_versions: int  # 0: the mount's setting (10 by default)
    cas_required: bool
    versions: Mapping[int, VersionInfo]

    @property
    def latest(self) -> VersionInfo | None:
        return self.versions.get(self.current_version)


@dataclass(frozen=True)
class SecretVersion:
    info: VersionInfo
    data: Mapping[str, Any] = field(repr=False)  # plaintext: never printed

    @property
    def version(self) -> int:
        return self.info.version


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)  # KV v2 times are UTC


def _info(version: int, meta: Mapping[str, Any]) -> VersionInfo:
    return VersionInfo(
        version=version,
        created=_time(meta.get("created_time")),
        deleted=_time(meta.get("deletion_time")),
        destroyed=bool(meta.get("destroyed")),
    )


def where(mount: str, path: str, namespace: str | None = None) -> str:
    """`secret/apps/orders`, with the namespace when one is set: how messages name a path."""
    shown = f"{mount.strip('/')}/{path.strip('/')}"
    return f"{shown} (namespace {namespace})" if namespace else shown


def gone_message(mount: str, path: str, info: VersionInfo, namespace: str | None = None, asked: str = "") -> str:
    """Why a version can't be read: deleted (undelete brings it back) or destroyed (it is gone)."""
    what = f"version {info.version}{asked} of {where(mount, path, namespace)}"
    if info.destroyed:
        return f"{what} was destroyed; it can't be read (point the file at another version, or write a new one)"
    day = info.deleted.date().isoformat() if info.deleted else "?"
    return (
        f"{what} was deleted on {day}; undelete it (vault kv undelete -mount={mount} -versions={info.version} {path}) "
        "or write a new version"
    )


class KvStore:
    """One store, used from many threads (each thread has its own hvac client and connection)."""

    def __init__(self, conn: Connection, *, timeout: float = DEFAULT_TIMEOUT, deadline: float | None = None):
        self.conn = conn
        self.timeout = timeout
        self.deadline = deadline  # time.monotonic() by which every request has answered
        self.requests = 0  # requests sent (benchmarks and tests count them)
        self._local = threading.local()
        self._count = threading.Lock()
        self._valid: bool | None = None  # VAULT_TOKEN looked itself up (after a 403)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **kw: Any) -> "KvStore":
        return cls(Connection.from_environ(environ), **kw)

    def where(self, mount: str, path: str) -> str:
        return where(mount, path, self.conn.namespace)

    # -- the API ----------------------------------------------------------------------------

    def read(self, mount: str, path: str, version: int | None = None) -> SecretVersion:
        """One version's data and metadata (latest when `version` is None). Raises NotFound,
        VersionGone, PermissionDenied, Unavailable."""
        shown = self.where(mount, path)
        params = {"version": version} if version is not None else {}
        try:
            answer = self._request("get", f"/v1/{_quote(mount)}/data/{_quote(path)}", shown, "read", params=params)
        except NotFound as exc:
            meta = (exc.body or {}).get("data") or {}
            meta = meta.get("metadata") if isinstance(meta, dict) else None
            if isinstance(meta, dict) and isinstance(meta.get("version"), int) and meta["version"] > 0:
                info = _info(meta["version"], meta)
                if not info.readable:
                    raise VersionGone(gone_message(mount, path, info, self.conn.namespace), info) from None
            if version is not None:
                raise NotFound(f"version {version} of {shown} does not exist") from None
            raise NotFound(self._not_found(shown)) from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            raise StoreError(f"vault: {shown}: the answer is not KV version 2 data (is {mount}/ a KV v2 mount?)")
        meta = data["metadata"]
        values = data.get("data")
        number = meta.get("version")
        if not _is_count(number) or number < 1 or not isinstance(values, (dict, type(None))):
            raise StoreError(f"vault: {shown}: the answer is not KV version 2 data (a version number and a map of fields)")
        return SecretVersion(info=_info(number, meta), data=values or {})

    def metadata(self, mount: str, path: str) -> PathMetadata | None:
        """The path's versions (created, deleted, destroyed) and its current version; None when
        the path has never been written."""
        shown = self.where(mount, path)
        try:
            answer = self._request("get", f"/v1/{_quote(mount)}/metadata/{_quote(path)}", shown, "read the metadata of")
        except NotFound:
            return None
        data = answer.get("data") if isinstance(answer, dict) else None
        counts = ("current_version", "oldest_version", "max_versions")
        if (not isinstance(data, dict) or not isinstance(data.get("versions") or {}, dict)
                or not all(_is_count(data.get(k) or 0) for k in counts)):
            raise StoreError(f"vault: {shown}: the metadata answer is not KV version 2 metadata")
        versions = {
            int(k): _info(int(k), v) for k, v in (data.get("versions") or {}).items() if str(k).isdigit() and isinstance(v, dict)
        }
        return PathMetadata(
            current_version=data.get("current_version") or 0,
            oldest_version=data.get("oldest_version") or 0,
            max_versions=data.get("max_versions") or 0,
            cas_required=bool(data.get("cas_required")),
            versions=versions,
        )

    def write(self, mount: str, path: str, data: Mapping[str, Any], *, cas: int) -> int:
        """Write `data` as the path's next version, only while its current version is `cas` (0:
        only while the path has none). Returns the new version. Raises CasConflict."""
        shown = self.where(mount, path)
        body = {"data": dict(data), "options": {"cas": cas}}
        answer = self._request("post", f"/v1/{_quote(mount)}/data/{_quote(path)}", shown, "write", json=body)
        version = ((answer or {}).get("data") or {}).get("version") if isinstance(answer, dict) else None
        if not isinstance(version, int):
            raise StoreError(f"vault: {shown}: the write was answered without a version number")
        return version

    def prepare_field(self, mount: str, path: str) -> "FieldWrite":
        """Read what a write of one field must keep (the latest version's other fields) and the
        version it must find still current (check-and-set); `FieldWrite.commit` writes."""
        current = 0
        data: dict[str, Any] = {}
        try:
            latest = self.read(mount, path)
            current, data = latest.version, dict(latest.data)
        except NotFound:
            meta = self.metadata(mount, path)
            if meta is not None and meta.current_version:
                # Every version deleted: nothing to keep, but check-and-set still counts them.
                current = meta.current_version
            elif self.kv_version(mount) == "1":
                # A KV v1 mount would take the write as a key named data/<path>: the token stored
                # where nothing reads it, and no version to check-and-set on.
                raise StoreError(f"vault: {mount.strip('/')}/ is a KV version 1 mount; tokens go to a KV version 2 "
                                 "mount (versions, check-and-set): nothing was written") from None
        except VersionGone as exc:
            if exc.info.destroyed:  # no undelete: only a hand-written version says what the other fields become
                raise StoreError(f"version {exc.info.version} of {self.where(mount, path)} was destroyed, and its other fields "
                                 f"with it: write the next version by hand (vault kv put -mount={mount} {path} ...)") from None
            raise StoreError(f"{exc}: its other fields can't be kept; undelete it first") from None
        return FieldWrite(self, mount, path, current, data)

    def set_field(self, mount: str, path: str, name: str, value: str) -> int:
        """A new version with `name` set to `value` and every other field of the latest version
        kept, written with check-and-set on the version read. Returns the new version."""
        return self.prepare_field(mount, path).commit(name, value)

    def kv_version(self, mount: str) -> str | None:
        """The mount's KV version ("1", "2"), from sys/internal/ui/mounts (the default policy reads
        it); None when the store does not say."""
        try:
            answer = self._request("get", f"/v1/sys/internal/ui/mounts/{_quote(mount)}", f"{mount.strip('/')}/", "look up the mount")
        except (NotFound, PermissionDenied):
            return None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or data.get("type") != "kv" or not isinstance(data.get("options"), dict):
            return None
        version = data["options"].get("version")
        return None if version is None else str(version)

    def may_write(self, mount: str, path: str, exists: bool) -> bool:
        """Whether VAULT_TOKEN's policies let it write the path (sys/capabilities-self), asked before
        a token exists that only this write would record. A path that has a version takes a new
        one with `update`; `create` only makes a path that has none."""
        api_path = f"{mount.strip('/')}/data/{path.strip('/')}"
        answer = self._request("post", "/v1/sys/capabilities-self", self.where(mount, path), "check", json={"paths": [api_path]})
        caps = answer.get(api_path) or answer.get("capabilities") or (answer.get("data") or {}).get(api_path) or []
        return bool({"root", "update" if exists else "create"} & set(caps if isinstance(caps, list) else []))

    # -- transport ---------------------------------------------------------------------------

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import hvac  # imported here: only files that use a vault store load it

            client = hvac.Client(
                url=self.conn.addr,
                token=self.conn.token,
                namespace=self.conn.namespace,
                verify=self.conn.verify,
                timeout=max(1, int(self.timeout)),  # each request passes its own (float) timeout
                allow_redirects=False,
            )
            self._local.client = client
        return client

    def _timeout(self, shown: str) -> float:
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Unavailable(f"vault at {self.conn.shown} did not answer in time")
        return min(self.timeout, left)

    def _request(self, method: str, url: str, shown: str, doing: str, **kw: Any) -> Any:
        import requests
        from hvac import exceptions as hv

        timeout = self._timeout(shown)
        with self._count:
            self.requests += 1
        try:
            answer = self._send(method, url, timeout, **kw)
        except hv.InvalidPath as exc:
            if _mentions(exc, "no handler for route"):
                mount = url.split("/")[2]
                raise StoreError(f"vault: no secrets engine is mounted at {mount}/ (path {shown})") from None
            raise NotFound(shown, getattr(exc, "json", None)) from None
        except hv.Forbidden:
            if not self._token_valid():
                raise Unavailable(f"vault: {TOKEN} is not valid at {self.conn.shown} (expired, revoked or mistyped)") from None
            raise PermissionDenied(
                f"vault: permission denied: VAULT_TOKEN may not {doing} {shown} (check the token and its policies)"
            ) from None
        except hv.InvalidRequest as exc:
            if _mentions(exc, "check-and-set"):
                raise CasConflict(f"vault: {shown} changed while this write was prepared (check-and-set); nothing was written") from None
            raise StoreError(f"vault: {doing} {shown}: the store refused the request ({_errors(exc)})") from None
        except (hv.VaultDown, hv.VaultNotInitialized) as exc:
            state = "sealed" if _mentions(exc, "sealed") else f"unavailable ({_errors(exc)})"
            raise Unavailable(f"vault at {self.conn.shown} is {state}") from None
        except hv.VaultError as exc:
            raise StoreError(f"vault: {doing} {shown}: {type(exc).__name__} ({_errors(exc)})") from None
        except requests.exceptions.SSLError:
            raise Unavailable(
                f"vault at {self.conn.shown}: TLS verification failed (set {CACERT} to the CA that signed its certificate)"
            ) from None
        except requests.exceptions.Timeout:
            raise Unavailable(f"vault at {self.conn.shown} did not answer within {timeout:.0f} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise Unavailable(f"vault at {self.conn.shown} can't be reached ({_cause(exc)})") from None
        except (requests.exceptions.RequestException, ValueError) as exc:
            raise Unavailable(f"vault at {self.conn.shown}: the request failed ({type(exc).__name__})") from None
        if not isinstance(answer, dict):
            status = getattr(answer, "status_code", "?")
            if isinstance(status, int) and 300 <= status < 400:
                raise StoreError(f"vault at {self.conn.shown} answered with a redirect (HTTP {status}); set {ADDR} to the address it names")
            if status == 204 or answer is None:
                return {}
            raise StoreError(f"vault: {doing} {shown}: unexpected answer (HTTP {status})")
        return answer

    def _send(self, method: str, url: str, timeout: float, **kw: Any) -> Any:
        """One request, answered within `timeout` (plus a second) in all: requests' timeout is per
        socket read, so a server trickling its answer a byte at a time would hold the run (and,
        through a worker thread, the process's exit) as long as it likes. The request runs in a
        daemon thread; past the time it is left there, with its connection, and this raises
        requests' Timeout."""
        import requests

        client = self._client()
        try:
            return call_within(timeout + 1.0, lambda: getattr(client.adapter, method)(url, timeout=timeout, **kw), "vault-request")
        except Abandoned:
            self._local.client = None  # its connection still belongs to the abandoned request
            raise requests.exceptions.Timeout() from None

    def _token_valid(self) -> bool:
        """Asked once, after a 403: a token that can't look itself up is not a token (every valid
        token's default policy allows auth/token/lookup-self)."""
        import requests
        from hvac import exceptions as hv

        if self._valid is None:
            try:
                self._send("get", "/v1/auth/token/lookup-self", self._timeout(""))
                self._valid = True
            except hv.Forbidden:
                self._valid = False
            except (hv.VaultError, requests.exceptions.RequestException):
                self._valid = True  # another problem: the 403 stands as it was
        return bool(self._valid)

    def _not_found(self, shown: str) -> str:
        if self.conn.namespace:
            return f"no secret at {shown}"
        return f"no secret at {shown} ({NAMESPACE} is not set: a secret in a namespace needs it)"


@dataclass
class FieldWrite:
    """A prepared write of one field (KvStore.prepare_field): the version read and its other fields."""

    store: KvStore
    mount: str
    path: str
    cas: int  # the current version when prepared (0: the path has none)
    keep: dict[str, Any] = field(repr=False)  # the latest version's data: plaintext, never printed

    def commit(self, name: str, value: str, **also: str) -> int:
        """Write the new version (`name` = `value`, plus the fields in `also`, the others kept);
        CasConflict when another writer was first. Returns its number."""
        return self.store.write(self.mount, self.path, {**self.keep, **also, name: value}, cas=self.cas)


def _is_count(value: Any) -> bool:
    """A JSON integer >= 0 (not a bool, a string or a float): what a store's version numbers are."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part.strip("/"), safe="/")


def _errors(exc: Any) -> str:
    errors = getattr(exc, "errors", None) or []
    text = "; ".join(str(e).strip().replace("\n", " ") for e in errors if str(e).strip()) or "no detail"
    return text[:200]


def _mentions(exc: Any, words: str) -> bool:
    return words in _errors(exc)


def _cause(exc: BaseException) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "Temporary failure in name resolution", "No route to host"):
        if known in text:
            return known.lower()
    return "connection failed"
