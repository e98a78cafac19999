"""Provider registry: `instances.<name>.provider` -> a Provider (reconciler.providers.base)."""

from __future__ import annotations

import importlib

from ..errors import ReconcilerError
from ..model import DesiredState
from .base import Capabilities, Provider

DEFAULT = "redis"


# provider name -> (package, class). Packages are imported only when an instance uses that
# provider: the HTTP providers need `requests`, which a file that uses only `redis` never loads.
_CLASSES = {
    "redis": ("redis", "RedisProvider"),
    "redis-software": ("redis_software", "RedisSoftwareProvider"),
    "memorystore": ("memorystore", "MemorystoreProvider"),
    "redis-cloud": ("redis_cloud", "RedisCloudProvider"),
}


def capabilities(name: str) -> Capabilities:
    """What provider `name` supports (imports its module: only for providers a file uses)."""
    return provider_class(name).capabilities


def supporting(capability: str) -> list[str]:
    """The providers that have `capability` (a Capabilities field), for error messages."""
    return [name for name in _CLASSES if getattr(capabilities(name), capability)]


def names() -> tuple[str, ...]:
    """Every provider's name (without importing any of them)."""
    return tuple(_CLASSES)


def known(name: str) -> bool:
    return name in _CLASSES


def provider_class(name: str) -> type[Provider]:
    if name not in _CLASSES:
        raise ReconcilerError(f"unknown provider '{name}' (known: {', '.join(_CLASSES)})")
    module, cls = _CLASSES[name]
    found: type[Provider] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return found


def get(name: str, desired: DesiredState) -> Provider:
    return provider_class(name)(desired)


def for_instance(desired: DesiredState, instance: str) -> Provider:
    return get(desired.instances[instance].provider or DEFAULT, desired)


def group(desired: DesiredState, names_: list[str]) -> dict[str, list[str]]:
    """Instance names by provider, in file order."""
    out: dict[str, list[str]] = {}
    for n in names_:
        out.setdefault(desired.instances[n].provider or DEFAULT, []).append(n)
    return out


__all__ = ["Capabilities", "Provider", "DEFAULT", "capabilities", "for_instance", "get", "group", "known", "provider_class", "supporting"]
