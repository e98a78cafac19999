"""Provider registry: `instances.<name>.provider` -> a Provider (reconciler.providers.base)."""

from __future__ import annotations

from ..errors import ReconcilerError
from ..model import DesiredState
from .base import Capabilities, Provider

DEFAULT = "redis"


def _classes() -> dict[str, type[Provider]]:
    # Imported lazily: the HTTP providers are not needed by a file that uses only `redis`.
    from .memorystore import MemorystoreProvider
    from .redis import RedisProvider
    from .redis_cloud import RedisCloudProvider
    from .redis_software import RedisSoftwareProvider

    return {"redis": RedisProvider, "redis-software": RedisSoftwareProvider, "memorystore": MemorystoreProvider,
            "redis-cloud": RedisCloudProvider}


def names() -> tuple[str, ...]:
    return ("redis", "redis-software", "memorystore", "redis-cloud")


def provider_class(name: str) -> type[Provider]:
    classes = _classes()
    if name not in classes:
        raise ReconcilerError(f"unknown provider '{name}' (known: {', '.join(classes)})")
    return classes[name]


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


__all__ = ["Capabilities", "Provider", "DEFAULT", "get", "for_instance", "group", "names", "provider_class"]
