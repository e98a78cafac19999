"""Certificate inventory file: what the last apply recorded, so a later plan can show a
certificate leaving the file (the end of a rotation) although servers, which map
certificates by CN, see no difference. Subjects and fingerprints only: no secret.
Kept apart from certs.py so that reading it does not import `cryptography`."""

from __future__ import annotations

import os

from . import records
from .errors import ReconcilerError
from .model import DesiredState


class InventoryError(ReconcilerError):
    """The inventory file exists but cannot be used."""


INVENTORY_VERSION = 1


def inventory_path(source: str) -> str:
    """`access.yaml` -> `access.inventory.json` (same folder)."""
    root, _ = os.path.splitext(source)
    return root + ".inventory.json"


def load_inventory(source: str) -> dict[str, dict[str, list[dict]]]:
    """instance -> user -> entries, {} when nothing was recorded yet."""
    path = inventory_path(source)
    try:
        doc = records.read_json(path)
    except (OSError, ValueError) as exc:
        raise InventoryError(f"certificate inventory {path} cannot be read: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or doc.get("version") != INVENTORY_VERSION or not isinstance(doc.get("instances"), dict):
        raise InventoryError(f"certificate inventory {path}: not an inventory file of version {INVENTORY_VERSION}")
    return doc["instances"]


def record_inventory(source: str, desired: DesiredState, instances: list[str]) -> str:
    """Record the file's current certificates for `instances` (others keep their record)."""
    recorded = load_inventory(source)
    for name in instances:
        users: dict[str, list[dict]] = {}
        for user in desired.users_for(name):
            entries = [
                {
                    "subject": c.info.subject,
                    "sha256": c.info.sha256,
                    "serial": c.info.serial,
                    "expires": c.info.not_after.date().isoformat(),
                    "cert_file": c.cert_file,
                }
                for c in user.certificates
                if c.info is not None
            ]
            if entries:
                users[user.name] = entries
        recorded[name] = users
    path = inventory_path(source)
    records.write_json(path, {"version": INVENTORY_VERSION, "instances": recorded})
    return path
