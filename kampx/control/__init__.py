"""kampx's control channel (JSON-RPC 2.0 over a Unix socket, docs/control.md)."""

from kampx.control.client import ControlClient, ControlError, NotRunning, RpcError, socket_path

__all__ = ["ControlClient", "ControlError", "NotRunning", "RpcError", "socket_path"]
