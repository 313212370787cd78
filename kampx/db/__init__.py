"""kampx's database: subscribers, the permissions address table, the dispatcher sets and
persisted locations.

storage = open_storage(cfg)          # in the process that uses it (after fork)
storage.subscribers.add(...)         # see kampx/db/base.py for the interface
"""

from __future__ import annotations

from kampx.db.base import (
    LOCATION_FIELDS,
    Addresses,
    AddressRow,
    Dispatcher,
    DispatcherRow,
    Locations,
    Storage,
    StorageError,
    Subscriber,
    Subscribers,
    binding_values,
)

__all__ = [
    "open_storage",
    "Storage",
    "StorageError",
    "Subscriber",
    "AddressRow",
    "Subscribers",
    "Addresses",
    "Dispatcher",
    "DispatcherRow",
    "Locations",
    "LOCATION_FIELDS",
    "binding_values",
]


def open_storage(cfg) -> Storage:
    """The database named by the config's [db] url, created and upgraded as needed.

    SQLite is opened at once. PostgreSQL (kampx/db/postgres.py) connects on first use, so
    that a worker holding the storage for subscriber lookups (served from the node's own
    SQLite replica) never opens a network connection."""
    from kampx.config import ConfigError

    try:
        path = cfg.db_path()  # rejects unknown schemes; with PostgreSQL, the node's own file
    except ConfigError as e:
        raise StorageError(str(e)) from None
    if cfg.db.shared:
        try:
            from kampx.db.postgres import PostgresStorage
        except ImportError as e:
            raise StorageError(
                f"[db] url names PostgreSQL but its driver is missing ({e}); "
                "install kampx[postgresql] (psycopg)"
            ) from None
        return PostgresStorage(
            cfg.db.url,
            cfg.db.display_url,
            local_path=path,
            connect_timeout=cfg.db.connect_timeout_s,
        )
    from kampx.db.sqlite import SqliteStorage

    return SqliteStorage(path)
