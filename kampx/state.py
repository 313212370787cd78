"""The proxy's state outside the packet path: the shared tables (location, permissions,
dispatcher, dialogs) attached to the SharedState, loaded from the database at start and on
reload (the supervisor runs the helper processes that keep them: timer, db writer, ctl,
dispatcher prober).

With a shared PostgreSQL database (several nodes, docs/scale-out.md) the start also creates
the node's own SQLite file and brings its subscriber replica level with PostgreSQL before the
first worker forks, so a node started later authenticates and routes with the current state
from its first packet; the db writer then follows the other nodes (kampx/cluster.py)."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("kampx.state")


class StateError(Exception):
    """One line for the operator."""


def _storage(cfg):
    from kampx.db import StorageError, open_storage

    try:
        return open_storage(cfg)
    except StorageError as e:
        raise StateError(f"database {cfg.db.display_url}: {e}") from None


def attach(shared, cfg) -> None:
    """Create the shared tables and fill them from the database (supervisor, before fork)."""
    from kampx.dispatcher.table import DispatcherTable
    from kampx.permissions import AddressTable, PermissionsError
    from kampx.usrloc import LocationStore

    shared.permissions = AddressTable()
    shared.dispatcher = DispatcherTable()
    try:
        shared.location = LocationStore(
            cfg.usrloc.capacity, int.from_bytes(os.urandom(8), "little")
        )
    except (OSError, MemoryError) as e:
        raise StateError(
            f"location table of {cfg.usrloc.capacity} bindings ([usrloc] capacity): "
            f"cannot allocate its shared memory: {e}"
        ) from None
    with _storage(cfg) as storage:
        if cfg.db.shared:
            _prepare_node(storage)
        try:
            n = shared.permissions.reload_from(storage)
        except PermissionsError as e:
            raise StateError(f"address table: {e}") from None
        destinations = _load_dispatcher(shared.dispatcher, storage)
        loaded, stored = _load_location(shared.location, storage)
        dialogs = _load_dialogs(shared.dialogs, storage)
    log.info("address table: %d entries", n)
    log.info("dispatcher: %d destinations", destinations)
    if dialogs:
        log.info("dialogs: %d established dialogs loaded", dialogs)
    if loaded < stored:
        log.warning(
            "location table: loaded %d of the %d bindings in the database (the table "
            "is full or some do not fit a slot); raise [usrloc] capacity",
            loaded,
            stored,
        )
    else:
        log.info("location table: %d bindings loaded (capacity %d)", loaded, cfg.usrloc.capacity)


def _prepare_node(storage) -> None:
    """A node of a PostgreSQL cluster: the server reachable (else no start: a node that
    cannot see the shared state would route with none), its own SQLite file, the replica."""
    from kampx.cluster import sync_subscribers
    from kampx.db import StorageError

    try:
        storage.connect()
        storage.open_local()
        n = sync_subscribers(storage)
    except StorageError as e:
        raise StateError(f"shared database: {e}") from None
    log.info(
        "shared database %s: subscriber replica in %s (%d rows brought level)",
        storage.where,
        storage.open_local().where,
        n,
    )


def _load_dispatcher(table, storage) -> int:
    from kampx.db import StorageError
    from kampx.dispatcher.destinations import DispatcherError

    try:
        return table.reload_from(storage)
    except (DispatcherError, StorageError) as e:
        raise StateError(f"dispatcher table: {e}") from None


def _load_location(store, storage) -> tuple[int, int]:
    """Fill the location table from the database: rows that expired while the proxy was
    down are deleted first. Returns (loaded, rows in the database)."""
    from kampx.db import StorageError
    from kampx.usrloc import Binding

    now = time.time()
    try:
        if not getattr(storage, "read_only", False):  # else the db writer deletes them later
            storage.locations.delete_expired(now)
        stored = storage.locations.count()
        loaded = store.load((Binding(**row) for row in storage.locations.load_all(now)), now)
    except StorageError as e:
        raise StateError(f"location table: {e}") from None
    return loaded, stored


def _load_dialogs(index, storage) -> int:
    """The dialogs established before a restart, so their in-dialog requests still pass
    the check (kampx/dialog.py); the rows that expired meanwhile are deleted."""
    from kampx import dialog
    from kampx.db import StorageError

    now = time.time()
    try:
        if not getattr(storage, "read_only", False):
            storage.dialogs.delete_expired(now)
        return dialog.load(index, storage.dialogs.load_live(now), now, time.monotonic())
    except StorageError as e:
        raise StateError(f"dialog table: {e}") from None


def reload(shared, cfg) -> int:
    """SIGHUP / permissions.addressReload: the address table from the database."""
    from kampx.permissions import PermissionsError

    with _storage(cfg) as storage:
        try:
            return shared.permissions.reload_from(storage)
        except PermissionsError as e:
            raise StateError(str(e)) from None


def reload_dispatcher(shared, cfg) -> int:
    """SIGHUP / dispatcher.reload: the dispatcher sets from the database (all or nothing);
    returns the number of destinations."""
    with _storage(cfg) as storage:
        return _load_dispatcher(shared.dispatcher, storage)
