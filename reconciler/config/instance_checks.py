"""Semantic checks of `instances:` -- nodes, TLS, admin, the managed providers' `api:`,
`topology: sentinel` and its users -- and building the Instance model, for the Builder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from .. import addresses, providers, secrets
from ..model import (
    Admin,
    ApiSettings,
    Instance,
    Policies,
    TLSClientAuth,
    TLSConfig,
)
from . import cloud
from .core import (
    HOST_PORT,
    as_bool,
    as_dict,
    as_list,
    as_str,
    is_int,
    node_problem,
)
from .user_checks import UserChecks
from .yamlsrc import Path


class InstanceChecks(UserChecks):
    def instances(self, raw: dict) -> dict[str, Instance]:
        out: dict[str, Instance] = {}
        seen_nodes: dict[str, tuple[str, Path]] = {}
        seen_sentinels: dict[str, tuple[str, Path]] = {}
        for name, spec in raw.items():
            if not isinstance(name, str) or not isinstance(spec, dict):
                continue
            base: Path = ("instances", name)
            nodes = self.nodes(spec.get("nodes"), base + ("nodes",), name, seen_nodes)
            defaults = Instance(name=name)
            timeout: Any = spec.get("timeout_seconds")
            out[name] = Instance(
                name=name,
                provider=as_str(spec.get("provider")) or defaults.provider,
                nodes=nodes,
                tls=self.tls(spec.get("tls")),
                admin=self.admin(spec.get("admin"), base + ("admin",), name),
                auth_mode=spec["auth_mode"] if spec.get("auth_mode") in ("token", "none") else defaults.auth_mode,
                tls_client_auth=self.tls_client_auth(spec.get("tls_client_auth")),
                persist=spec["persist"]
                if spec.get("persist") in ("auto", "acl-save", "config-rewrite", "none")
                else defaults.persist,
                prune=as_bool(spec.get("prune"), defaults.prune),
                topology=spec["topology"]
                if spec.get("topology") in ("auto", "standalone", "replicated", "cluster", "sentinel")
                else defaults.topology,
                discover=as_bool(spec.get("discover"), defaults.discover),
                kill_sessions_on_revoke=as_bool(spec.get("kill_sessions_on_revoke"), defaults.kill_sessions_on_revoke),
                timeout_seconds=float(timeout)
                if (is_int(timeout) or isinstance(timeout, float)) and 0 < timeout <= 3600
                else defaults.timeout_seconds,
                line=self.line(base),
                api=self.api(spec, base, name),
                client_certificates=cloud.client_certificates(self, spec, base),
                **self.sentinel_keys(spec, base, name, seen_sentinels),
            )
            if out[name].topology == "standalone" and len(nodes) > 1:
                self.problem(base + ("topology",), f"topology: standalone but {len(nodes)} nodes are listed")
        return out

    def sentinel_keys(self, spec: dict, base: Path, instance: str, seen: dict[str, tuple[str, Path]]) -> dict[str, Any]:
        """sentinels, master_name, sentinel_admin of `topology: sentinel` (sentinel_users come later,
        once roles are known). Several instances may share sentinels (one sentinel group watching
        several masters), but only one of them may manage those sentinels' users."""
        keys = ("sentinels", "master_name", "sentinel_admin", "sentinel_users")
        if spec.get("topology") != "sentinel":
            for key in keys:
                if key in spec:
                    self.problem(base + (key,), f"{key}: is for topology: sentinel")
            return {}
        provider = as_str(spec.get("provider")) or providers.DEFAULT
        if providers.known(provider) and not providers.capabilities(provider).topology:
            self.problem(base + ("topology",), f"topology: sentinel is for provider {' or '.join(providers.supporting('topology'))}")
        if "nodes" in spec:
            self.problem(base + ("nodes",), "nodes: is not used with topology: sentinel: the sentinels report the primary and replicas; list the sentinels under sentinels:")
        if spec.get("discover") is False:
            self.problem(base + ("discover",), "discover: false does not apply to topology: sentinel (the nodes are the ones the sentinels report)")
        manages = "sentinel_users" in spec
        own: dict[str, tuple[str, Path]] = {}
        sentinels = self.nodes(spec.get("sentinels"), base + ("sentinels",), instance, own)
        if manages:
            for address, (_, where) in own.items():
                if clash := self.claim(seen, address, instance, where):
                    self.problem(
                        where,
                        f"sentinel {address} is also managed by instance '{clash[0]}' (sentinel_users:, line {clash[1]}); "
                        "the users of a sentinel are declared in one instance",
                    )
        return {
            "sentinels": sentinels,
            "master_name": as_str(spec.get("master_name")),
            "sentinel_admin": self.admin(spec.get("sentinel_admin"), base + ("sentinel_admin",), instance),
            "sentinel_users": () if manages else None,
        }

    def sentinel_users(self, raw: dict, instances: dict[str, Instance], roles: dict[str, str | None], policies: Policies) -> dict[str, Instance]:
        """Instances with their `sentinel_users:` built like top-level users (same roles, tokens, checks)."""

        out = dict(instances)
        for name, inst in instances.items():
            if inst.sentinel_users is None:
                continue
            base: Path = ("instances", name, "sentinel_users")
            spec = as_dict(as_dict(raw.get(name)).get("sentinel_users"))
            for user, uspec in spec.items():
                if isinstance(uspec, dict) and "instances" in uspec:
                    self.problem(base + (user, "instances"), "instances: is not used in sentinel_users (they belong to this instance's sentinels)")
            users = self.users(spec, {name: inst}, roles, policies, base=base)
            out[name] = replace(inst, sentinel_users=tuple(users.values()))
        return out

    def api(self, spec: dict, base: Path, instance: str) -> ApiSettings | None:
        """`api:` of a managed-service provider; what each provider needs is checked here."""
        provider = as_str(spec.get("provider")) or "redis"
        raw = spec.get("api")
        if provider == cloud.PROVIDER:
            return cloud.api(self, spec, raw, base)
        cloud.not_cloud(self, spec, raw, base)
        if provider == "redis":
            if raw is not None:
                self.problem(base + ("api",), "api: is for provider redis-software or memorystore (provider: redis uses nodes:)")
            return None
        if provider not in ("redis-software", "memorystore"):
            return None  # the schema reported it
        if "nodes" in spec and provider == "redis-software":
            self.problem(base + ("nodes",), f"nodes: is not used by provider {provider} (the service is reached through api:)")
        if not isinstance(raw, dict):
            return None  # the schema reported it
        url, database, resource = as_str(raw.get("url")), raw.get("database"), as_str(raw.get("instance"))
        if provider == "redis-software":
            if not url:
                self.problem(base + ("api",), "provider redis-software needs api.url (the cluster's REST API, https://HOST:9443)")
            if not is_int(database):
                self.problem(base + ("api",), "provider redis-software needs api.database (the uid of the database whose users this file manages)")
            if resource:
                self.problem(base + ("api", "instance"), "api.instance is for provider memorystore")
        else:
            if not resource:
                self.problem(base + ("api",), "provider memorystore needs api.instance (projects/PROJECT/locations/REGION/instances/ID)")
            if "database" in raw:
                self.problem(base + ("api", "database"), "api.database is for provider redis-software")
        data_plane: Admin | None = None
        if provider == "memorystore" and isinstance(raw.get("data_plane"), dict):
            data_plane = self.admin(raw["data_plane"], base + ("api", "data_plane"), instance)
        elif "data_plane" in raw:
            self.problem(base + ("api", "data_plane"), "api.data_plane is for provider memorystore")
        if provider == "memorystore" and "nodes" in spec and data_plane is None:
            self.problem(base + ("nodes",), "nodes: on a memorystore instance are for CLIENT KILL USER and need api.data_plane (who connects)")
        ca = as_str(raw.get("ca_file"))
        return ApiSettings(
            url=url,
            database=database if is_int(database) else None,
            instance=resource,
            ca_file=self.path_of(ca) if ca else None,
            data_plane=data_plane,
        )

    def nodes(self, raw: Any, path: Path, instance: str, seen: dict[str, tuple[str, Path]]) -> tuple[str, ...]:
        out: list[str] = []
        for i, item in enumerate(as_list(raw)):
            where = path + (i,)
            address: str | None = None
            if isinstance(item, str):
                if not HOST_PORT.match(item):
                    continue  # the schema reported it
                address = item
                problem = node_problem(address)
            elif isinstance(item, dict) and isinstance(item.get("env"), str) and len(item) == 1:
                name = item["env"]
                value = self.environ.get(name)
                if value is None or value.strip() == "":
                    if not self.resolve_secrets:
                        out.append(f"env:{name}")
                        continue
                    self.problem(where, f"environment variable {name} is not set (expected host:port)")
                    continue
                address = value.strip()
                problem = node_problem(address)
                if problem:
                    problem = f"environment variable {name}: {problem}"
            else:
                continue
            if problem:
                self.problem(where, problem)
                continue
            # Spellings that can only name the same server count as the same node (localhost and
            # 127.0.0.1, IPv6 forms, a host name's case); plan compares what the servers say.
            twin = next((o for o in out if addresses.same_node(o, address)), None)
            if twin is not None:
                self.problem(where, f"node {address} is listed twice" + (f" (also as {twin})" if twin != address else ""))
                continue
            clash = next(((a, v) for a, v in seen.items() if v[0] != instance and addresses.same_node(a, address)), None)
            if clash is not None:
                spelled, (other, other_path) = clash
                also = f" as {spelled}" if spelled != address else ""
                self.problem(
                    where,
                    f"node {address} is also in instance '{other}'{also} (line {self.line(other_path)}); "
                    "a node belongs to one instance",
                )
                continue
            seen[address] = (instance, where)
            out.append(address)
        return tuple(out)

    def tls(self, raw: Any) -> TLSConfig | None:
        if not isinstance(raw, dict):
            return None

        def p(key: str) -> str | None:
            v = as_str(raw.get(key))
            return self.path_of(v) if v else None

        return TLSConfig(ca_file=p("ca_file"), cert_file=p("cert_file"), key_file=p("key_file"),
                         server_name=as_str(raw.get("server_name")))

    def tls_client_auth(self, raw: Any) -> TLSClientAuth | None:
        if not isinstance(raw, dict):
            return None
        req = raw.get("required")
        required: Literal["true", "false", "optional"] = "true" if req is True else "optional" if req == "optional" else "false"
        field_: Literal["CN", "none"] = raw["user_field"] if raw.get("user_field") in ("CN", "none") else "none"
        return TLSClientAuth(required=required, user_field=field_)

    def admin(self, raw: Any, path: Path, instance: str) -> Admin:
        if not isinstance(raw, dict):
            return Admin()
        username = as_str(raw.get("username")) or "default"
        if "secret" not in raw:
            return Admin(username=username)
        source, resolved = self.resolve_secret(
            raw["secret"], path + ("secret",), f"admin secret of instance {instance} ({secrets.describe(as_dict(raw['secret']))})"
        )
        admin = Admin(username=username, secret=resolved.secret if resolved else None, source=source)
        return cloud.account_key(self, raw, path, instance, admin)
