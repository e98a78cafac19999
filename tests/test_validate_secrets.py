"""`validate` checks secret references for their form only, so CI can lint a pull request without
production secrets; `--resolve-secrets` (and plan/apply, always) read them and run the checks
that need the plaintext."""

from __future__ import annotations

import os
from pathlib import Path

from support.cli import Cli, Result

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(str(p.relative_to(REPO)) for p in (REPO / "examples").glob("*.yaml"))


def cli(*argv: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Result:
    """As a subprocess, like `env -i PATH=...`: no secret in the environment but the ones given."""
    return Cli(cwd, env=env or {}, inherit=False)(*argv)


def test_examples_validate_with_no_secrets_set() -> None:
    assert len(EXAMPLES) >= 3
    r = cli("validate", "-f", *EXAMPLES)
    assert r.code == 0, r.err
    assert r.err == ""
    assert [line.split(":")[0] for line in r.out.splitlines()] == EXAMPLES
    r = cli("validate", "--resolve-secrets", "-f", "examples/quickstart.yaml")
    assert r.code == 1
    assert "examples/quickstart.yaml:24: instances.demo.admin.secret: " in r.err
    assert "environment variable DEMO_ADMIN_TOKEN is not set" in r.err


FILE = """\
version: 1
policies: {min_token_length: 16}
instances:
  cache:
    nodes: ["127.0.0.1:1"]
    admin: {username: default, secret: {env: ADMIN_TOKEN}}
users:
  app:
    acl: "~app:* +get"
    tokens:
      - id: t1
        secret: {env: %s}
      - id: t2
        secret: {file: %s}
"""


def test_shape_errors_without_reading(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(FILE % ("1-NOT-A-NAME", "' '"))
    r = cli("validate", "-f", "bad.yaml", cwd=tmp_path)
    assert r.code == 1
    assert r.err.splitlines() == [
        "bad.yaml:12: users.app.tokens[0].secret.env: expected an environment variable name (letters, digits, '_')",
        "bad.yaml:14: users.app.tokens[1].secret: token t2 of user app (file: ): the secret file path is empty",
    ]


def test_plaintext_policies_run_when_resolved(tmp_path: Path) -> None:
    (tmp_path / "app.token").write_text("Long-enough-token-value-1\n")
    os.chmod(tmp_path / "app.token", 0o600)
    (tmp_path / "a.yaml").write_text(FILE % ("APP_TOKEN", "app.token"))
    env = {"APP_TOKEN": "Short-7q", "ADMIN_TOKEN": "Admin-token-long-enough-1"}
    assert cli("validate", "-f", "a.yaml", cwd=tmp_path).code == 0  # form only: nothing read
    for argv in (["validate", "--resolve-secrets"], ["plan"]):
        r = cli(*argv, "-f", "a.yaml", env=env, cwd=tmp_path)
        assert r.code == 1, (argv, r.out)
        assert "a.yaml:12: users.app.tokens[0].secret: " in r.err and "min_token_length (16)" in r.err
        assert "Short-7q" not in r.out + r.err
    env["APP_TOKEN"] = "Another-long-enough-token-2"
    r = cli("validate", "--resolve-secrets", "-f", "a.yaml", env=env, cwd=tmp_path)
    assert r.code == 0, r.err
