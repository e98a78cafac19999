"""Semantic checks the schema can't express, and building the model.

Runs on data that may also have schema errors: every accessor checks types and skips what
is malformed (the schema already reported it), so one run reports every problem. The checks
are split by concern: core.py (accessors, problems), certificate_checks.py, user_checks.py
(roles, users and tokens), instance_checks.py; the Builder puts them together.
"""

from __future__ import annotations

from typing import Any, Callable

from ..model import (
    DesiredState,
    Policies,
)
from .core import (
    Issue,
    as_bool,
    as_dict,
    as_str,
    format_path,
    is_int,
)
from .instance_checks import InstanceChecks
from .yamlsrc import Path


class Builder(InstanceChecks):
    def build(self, source_name: str) -> DesiredState:
        data = self.src.data
        self.prefetch_secrets()
        policies = self.policies(as_dict(data.get("policies")))
        instances = self.instances(as_dict(data.get("instances")))
        roles = self.roles(as_dict(data.get("roles")))
        users = self.users(as_dict(data.get("users")), instances, roles, policies)
        instances = self.sentinel_users(as_dict(data.get("instances")), instances, roles, policies)
        audit = as_str(data.get("audit_log"))
        return DesiredState(
            source=source_name,
            version=data.get("version") if is_int(data.get("version")) else 1,
            policies=policies,
            instances=instances,
            roles={name: rules for name, rules in roles.items() if rules is not None},
            users=users,
            audit_log=self.path_of(audit) if audit else None,
        )

    def policies(self, raw: dict) -> Policies:
        d = Policies()
        ints = {}
        for key in ("token_max_age_days", "expiry_warning_days", "min_token_length", "max_delete_percent", "min_overlap_hours"):
            if is_int(raw.get(key)):
                ints[key] = raw[key]
        return Policies(
            token_max_age_days=ints.get("token_max_age_days", d.token_max_age_days),
            expiry_warning_days=ints.get("expiry_warning_days", d.expiry_warning_days),
            min_token_length=ints.get("min_token_length", d.min_token_length),
            password_complexity=as_bool(raw.get("password_complexity"), d.password_complexity),
            forbid_nopass=as_bool(raw.get("forbid_nopass"), d.forbid_nopass),
            max_delete_percent=ints.get("max_delete_percent", d.max_delete_percent),
            min_overlap_hours=ints.get("min_overlap_hours", d.min_overlap_hours),
        )


def emit_warnings(issues: list[Issue], line_of: Callable[[Path], int], file: str, write: Callable[[str], Any]) -> None:
    for issue in sorted((i for i in issues if i.warning), key=lambda i: line_of(i.path)):
        where = f"{file}:{issue.line or line_of(issue.path)}"
        write(f"{where}: {format_path(issue.path)}: warning: {issue.message}\n")
