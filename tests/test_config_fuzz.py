"""Property test: whatever the file holds, load() returns a DesiredState or raises ConfigError
whose problems all carry the file name and a line -- never another exception."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.config import load
from reconciler.errors import ConfigError
from reconciler.model import DesiredState

KEYS = [
    "version", "policies", "instances", "roles", "users", "nodes", "admin", "tls", "tls_client_auth",
    "required", "user_field", "tokens", "certificates", "id", "secret", "sha256", "env", "file",
    "created", "expires", "acl", "enabled", "instances", "subject", "cert_file", "prune", "persist",
    "min_token_length", "password_complexity", "c", "u", "r",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1", "c", "u", "r", "h:1", "[::1]:6379", "on", ">pw", "+@raed", "~* +get", "CN=u",
                     "2026-11-01", "2026-02-30", "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
                     "(~x +get)", "(~x", "optional", "CN", "env"]),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
DOCS = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1"])},
    optional={
        "instances": st.dictionaries(st.sampled_from(["c", "d"]), VALUES, max_size=2),
        "users": st.dictionaries(st.sampled_from(["u", "v", "c"]), VALUES, max_size=3),
        "roles": st.dictionaries(st.sampled_from(["r", "s"]), VALUES, max_size=2),
        "policies": VALUES,
    },
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "f.yaml"
        f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            state = load(str(f), today=date(2026, 11, 23), environ={"env": "h:1"})
        except ConfigError as exc:
            assert exc.problems
            assert all(p.file == str(f) for p in exc.problems)
            assert all(p.line >= 1 for p in exc.problems), exc.problems
            assert ">pw" not in str(exc)
            return
        assert isinstance(state, DesiredState)


@SETTINGS
@given(DOCS)
def test_structured_documents(doc: dict) -> None:
    _check(yaml.safe_dump(doc, allow_unicode=True))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _check(text)


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(data)
