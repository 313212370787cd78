"""The proxy's state outside the packet path: the shared tables (location, permissions)
attached to the SharedState, loaded from the database at start and on reload, and the
helper processes that keep them (timer, db writer, ctl)."""
from __future__ import annotations

import logging

log = logging.getLogger("kampx.state")


class StateError(Exception):
    """One line for the operator."""


def _storage(cfg):
    from kampx.db import StorageError, open_storage
    try:
        return open_storage(cfg)
    except StorageError as e:
        raise StateError(f"database {cfg.db.url}: {e}") from None


def attach(shared, cfg) -> None:
    """Create the shared tables and fill them from the database (supervisor, before fork)."""
    from kampx.permissions import AddressTable, PermissionsError
    shared.permissions = AddressTable()
    with _storage(cfg) as storage:
        try:
            n = shared.permissions.reload_from(storage)
        except PermissionsError as e:
            raise StateError(f"address table: {e}") from None
    log.info("address table: %d entries", n)


def reload(shared, cfg) -> int:
    """SIGHUP / permissions.addressReload: the address table from the database."""
    from kampx.permissions import PermissionsError
    with _storage(cfg) as storage:
        try:
            return shared.permissions.reload_from(storage)
        except PermissionsError as e:
            raise StateError(str(e)) from None


def helper_processes(shared, cfg, supervisor) -> list:
    from kampx.control.ctlproc import CtlProcess
    from kampx.timer import TimerProcess
    return [
        TimerProcess(shared, cfg),
        CtlProcess(shared, cfg, supervisor),
    ]
