"""The client side of kampx's control channel (docs/control.md): JSON-RPC 2.0 over a Unix
stream socket, one request per connection, the response one newline-terminated JSON line."""

from __future__ import annotations

import itertools
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from kampx.control.framing import read_line

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE = 256 * 1024 * 1024  # a ul.dump page of long AORs stays far below this
DUMP_PAGE = 500  # AORs per ul.dump page

_ids = itertools.count(1)


class ControlError(Exception):
    """A control-channel failure, worded as one line."""


class NotRunning(ControlError):
    def __init__(self, path: str):
        super().__init__(f"kampx is not running at {path}")
        self.path = path


class RpcError(ControlError):
    """The server answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def socket_path(cfg) -> str:
    """The [control] socket of a kampx.config.Config as an absolute path (a relative one is
    relative to the config's base directory, as the proxy resolves it)."""
    path = cfg.control.socket
    return path if os.path.isabs(path) else os.path.join(cfg.base_dir, path)


class ControlClient:
    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = timeout

    def call(self, method: str, params: dict | list | None = None) -> Any:
        """Send one request and return its result; RpcError for an error response."""
        req_id = next(_ids)
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": req_id}
        if params is not None:
            request["params"] = params
        raw = self._exchange(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        try:
            response = json.loads(raw)
        except ValueError:
            raise ControlError(f"kampx at {self.path} sent a response that is not JSON") from None
        if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
            raise ControlError(f"kampx at {self.path} sent a response that is not JSON-RPC 2.0")
        if "error" in response:
            err = response["error"]
            if not isinstance(err, dict):
                raise ControlError(f"kampx at {self.path} sent a malformed error")
            raise RpcError(
                int(err.get("code", 0)), str(err.get("message", "error")), err.get("data")
            )
        if response.get("id") != req_id:
            raise ControlError(
                f"kampx at {self.path} answered another request "
                f"(id {response.get('id')!r}, expected {req_id})"
            )
        if "result" not in response:
            raise ControlError(f"kampx at {self.path} sent a response without result")
        return response["result"]

    def dump_aors(self, page: int = DUMP_PAGE) -> Iterator[dict]:
        """Every AOR of the location table, page by page (ul.dump), so that a million
        bindings never have to fit in one response."""
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page}
            if cursor is not None:
                params["cursor"] = cursor
            result = self.call("ul.dump", params)
            if not isinstance(result, dict) or not isinstance(result.get("aors"), list):
                raise ControlError('ul.dump: malformed result (expected {"aors": [...], ...})')
            yield from result["aors"]
            next_cursor = result.get("next")
            if next_cursor is None:
                return
            if next_cursor == cursor:
                raise ControlError(f"ul.dump: the server repeated cursor {cursor!r}")
            cursor = next_cursor

    def _exchange(self, request: bytes) -> bytes:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                raise NotRunning(self.path) from None
            except PermissionError:
                raise ControlError(f"permission denied on the control socket {self.path}") from None
            except OSError as e:
                if len(os.fsencode(self.path)) > 107:
                    raise ControlError(
                        f"control socket path is longer than 107 bytes: {self.path}"
                    ) from None
                raise ControlError(f"cannot connect to {self.path}: {e.strerror or e}") from None
            try:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                return self._read_line(sock)
            except socket.timeout:
                raise ControlError(
                    f"kampx at {self.path} did not answer within {self.timeout:g} s"
                ) from None
            except OSError as e:
                raise ControlError(
                    f"control connection to {self.path} failed: {e.strerror or e}"
                ) from None
        finally:
            sock.close()

    def _read_line(self, sock: socket.socket) -> bytes:
        data, too_long = read_line(sock, MAX_RESPONSE)
        if too_long:
            raise ControlError(
                f"kampx at {self.path} sent more than {MAX_RESPONSE >> 20} MiB without a newline"
            )
        if not data.strip():
            raise ControlError(f"kampx at {self.path} closed the connection without answering")
        return data
