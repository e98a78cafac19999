"""Load the desired-state YAML: file -> YAML with line marks -> JSON Schema -> semantic checks
-> secrets resolved -> frozen DesiredState. Every problem is collected and raised together as a
ConfigError (one `FILE:LINE: YAML.PATH: message` line each, sorted by line).
"""

from __future__ import annotations

import os
import sys
from datetime import date
from typing import Mapping

from .. import clock, files
from ..errors import ConfigError, Problem
from ..model import DesiredState
from ..secrets.exec import allowed as exec_allowed
from . import cache as _cache
from . import schema as _schema
from .build import Builder, emit_warnings
from .core import format_path, redact
from .yamlsrc import MAX_BYTES, SourceError, decode, parse

__all__ = ["load", "format_path"]


def load(
    path: str,
    *,
    allow_expired: bool = False,
    today: date | None = None,
    resolve_secrets: bool = True,
    environ: Mapping[str, str] | None = None,
    allow_exec: bool = False,
    base_dir: str | None = None,
) -> DesiredState:
    """Read and check `path` (named in messages exactly as given).

    allow_expired: expired `expires` dates are not errors (plan/drift remove and report them).
    resolve_secrets: False skips reading secrets, no store read and no command run (tokens from
        them get sha256 "", admin.secret None, and a node {env: NAME} whose variable is unset
        stays "env:NAME").
    environ: where {env: NAME} and the stores' settings (VAULT_ADDR...) are looked up (default os.environ).
    allow_exec: `exec:` secrets may run (--allow-exec); RECONCILER_ALLOW_EXEC=1 in `environ` does the same.
    base_dir: where relative paths and `exec:` commands start from (default: the file's folder;
        import reads a copy of an instance's spec on behalf of the file it came from).
    Warnings (e.g. a secret file readable by others) go to stderr.
    """
    today = today or clock.today()
    text = _read(path)
    src = _cache.get(text)
    cached = src is not None
    if src is None:
        try:
            src = parse(text)
        except SourceError as exc:
            raise ConfigError(_clean([Problem(path, exc.line, format_path(exc.path), exc.message)])) from None

    problems = [Problem(path, p.line, format_path(p.path), p.message) for p in src.problems]
    version = src.data.get("version")
    if "version" in src.data and version != 1:
        if isinstance(version, str) and version.strip() == "1":
            message = "version is the string '1': write version: 1 (a number, no quotes)"
        elif isinstance(version, int) and not isinstance(version, bool):
            message = f"unsupported version {version} (this reconciler reads version: 1)"
        else:
            message = "unsupported version (this reconciler reads version: 1)"
        problems.append(Problem(path, src.line_of(("version",)), "version", message))
        raise ConfigError(_clean(problems))

    if not cached:
        for sp in _schema.check(src.data):
            problems.append(Problem(path, src.line_of(sp.path), format_path(sp.path), sp.message))

    environ = os.environ if environ is None else environ
    builder = Builder(
        src=src,
        base_dir=os.path.dirname(path) if base_dir is None else base_dir,
        today=today,
        allow_expired=allow_expired,
        resolve_secrets=resolve_secrets,
        environ=environ,
        allow_exec=allow_exec or exec_allowed(environ),
    )
    state = builder.build(path)
    for issue in builder.issues:
        if not issue.warning:
            problems.append(Problem(path, issue.line or src.line_of(issue.path), format_path(issue.path), issue.message))
    emit_warnings(builder.issues, src.line_of, path, sys.stderr.write)
    if problems:
        raise ConfigError(_clean(problems))
    if not cached:
        # Only a file that passed every check is cached: a rejected one may hold a pasted password.
        _cache.put(text, src)
    return state


def _clean(problems: list[Problem]) -> list[Problem]:
    """Say each problem once, and never echo anything shaped like a password rule ('>…')."""
    out = [Problem(p.file, p.line, redact(p.path), redact(p.message)) for p in problems]
    return list(dict.fromkeys(out))


def _read(path: str) -> str:
    def fail(message: str, line: int = 0) -> ConfigError:
        return ConfigError([Problem(path, line, "", message)])

    try:
        raw, _ = files.read_regular(path, MAX_BYTES)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    except files.NotRegular:
        raise fail("not a regular file") from None
    except files.TooLarge as exc:
        raise fail(f"file is too large ({exc.size / 1e6:.1f} MB; the limit is {MAX_BYTES // (1024 * 1024)} MiB)", 1) from None
    try:
        return decode(raw)
    except SourceError as exc:
        raise fail(exc.message, exc.line) from None
