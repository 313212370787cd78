"""Script functions of Kamailio's dialog module (kampx/dialog.py, kampx/dialog_table.py)."""

from __future__ import annotations

from kampx.routing.context import ctx

__all__ = ["dlg_manage", "is_known_dlg"]


def dlg_manage() -> bool:
    """Track the dialog this initial INVITE starts (Kamailio's dlg_manage): `kampxctl dlg`
    lists it, its end writes a CDR (acc_cdrs), its answer and length feed the call metrics.
    The request must also be Record-Routed (record_route()) before t_relay(), so that its
    BYE comes back through the proxy."""
    msg = ctx.msg
    if msg.has_to_tag or msg.method != "INVITE":
        return False
    msg.dlg_manage = True
    return True


def is_known_dlg() -> bool:
    """Whether this in-dialog request belongs to a dialog tracked with dlg_manage()."""
    msg = ctx.msg
    table = ctx.worker.dialogs.table
    if table is None or not msg.has_to_tag:
        return False
    from kampx.dialog import key

    return any(table.get(key(msg.call_id or "", t or "")) for t in (msg.from_tag, msg.to_tag))
