"""kampx's database: subscribers, the permissions address table and persisted locations.

    storage = open_storage(cfg)          # in the process that uses it (after fork)
    storage.subscribers.add(...)         # see kampx/db/base.py for the interface
"""
from __future__ import annotations

from kampx.db.base import (LOCATION_FIELDS, Addresses, AddressRow, Locations, Storage,
                           StorageError, Subscriber, Subscribers, binding_values)

__all__ = ["open_storage", "Storage", "StorageError", "Subscriber", "AddressRow",
           "Subscribers", "Addresses", "Locations", "LOCATION_FIELDS", "binding_values"]


def open_storage(cfg) -> Storage:
    """The database named by the config's [db] url, created and upgraded as needed."""
    from kampx.config import ConfigError
    from kampx.db.sqlite import SqliteStorage
    try:
        path = cfg.db_path()  # the only scheme so far; it rejects the others
    except ConfigError as e:
        raise StorageError(str(e)) from None
    return SqliteStorage(path)
