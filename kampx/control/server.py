"""The server side of the control channel (docs/control.md): JSON-RPC 2.0 over a Unix stream
socket, one request per connection, one newline-terminated JSON response.

This module is the transport and the envelope only: reading a request, checking it, mapping
failures to JSON-RPC error objects. The methods themselves are kampx/control/methods.py.
Each connection gets a thread, so a client that stalls never blocks another; the methods
run one at a time (they share per-process scratch state of the shared tables), except those
marked `unlocked` (a long poll such as trace.read), which guard their own state.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from typing import Any

from kampx.control.framing import read_line

log = logging.getLogger("kampx.ctl")

MAX_REQUEST = 1 << 20  # docs/control.md: longer requests get -32600
READ_TIMEOUT = 10.0  # a client that connects and says nothing is dropped after this
MAX_CONNECTIONS = 64  # concurrent clients; more are refused (closed at once)
SOCKET_MODE = 0o660

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class RpcFault(Exception):
    """A JSON-RPC error answer: code, one-line message, optional data object."""

    def __init__(self, code: int, message: str, data: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class InvalidParams(RpcFault):
    def __init__(self, detail: str):
        super().__init__(INVALID_PARAMS, f"invalid params: {detail}")


Method = Callable[[dict], Any]


class SocketInUse(OSError):
    """Another live process answers on the socket path."""


def bind_unix(path: str) -> socket.socket:
    """Listen on `path` with mode 0660. A stale socket file (nothing answers on it: a killed
    proxy left it) is replaced; a live one is not (SocketInUse)."""
    if len(os.fsencode(path)) > 107:
        raise OSError(errno.ENAMETOOLONG, f"control socket path is longer than 107 bytes: {path}")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o750, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise SocketInUse(errno.EADDRINUSE, f"another process serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o117)  # never readable by others, not even between bind and chmod
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    sock.listen(64)
    return sock


class RpcServer:
    def __init__(self, sock: socket.socket, path: str, methods: dict[str, Method]):
        self.sock = sock
        self.path = path
        self.methods = methods
        self.inode = os.stat(path).st_ino
        self._run_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closing = False

    # -- serving ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self._closing:
                    return
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(
                target=self._connection, args=(conn,), daemon=True, name="ctl-conn"
            ).start()

    def close(self) -> None:
        """Stop accepting and remove the socket file if it is still ours."""
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    def _connection(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(READ_TIMEOUT)
            raw, too_long = read_line(conn, MAX_REQUEST)
            response = self.handle(raw, too_long)
            if response is not None:
                conn.sendall(
                    json.dumps(response, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                )
        except (OSError, socket.timeout):
            pass  # the client went away or stalled: nothing to answer
        finally:
            conn.close()
            self._slots.release()

    # -- the envelope -----------------------------------------------------------------------

    def handle(self, raw: bytes, too_long: bool = False) -> dict | None:
        """One request's bytes -> the response object (None for a notification)."""
        if too_long:
            return _error(
                None, INVALID_REQUEST, f"invalid request: longer than {MAX_REQUEST >> 20} MiB"
            )
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(None, PARSE_ERROR, f"parse error: {e}")
        if isinstance(req, list):
            return _error(
                None, INVALID_REQUEST, "invalid request: batch requests are not supported"
            )
        if not isinstance(req, dict):
            return _error(None, INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object")
        req_id = req.get("id")
        if "id" in req and (
            isinstance(req_id, bool) or not isinstance(req_id, (str, int, float, type(None)))
        ):
            return _error(
                None, INVALID_REQUEST, "invalid request: 'id' must be a string, number or null"
            )
        if req.get("jsonrpc") != "2.0":
            return _error(req_id, INVALID_REQUEST, "invalid request: 'jsonrpc' must be \"2.0\"")
        method = req.get("method")
        if not isinstance(method, str):
            return _error(req_id, INVALID_REQUEST, "invalid request: 'method' must be a string")
        result = self.call(method, req.get("params"))
        if "id" not in req:
            return None  # a notification: executed, not answered
        if isinstance(result, RpcFault):
            return _error(req_id, result.code, result.message, result.data)
        return {"jsonrpc": "2.0", "result": result, "id": req_id}

    def call(self, name: str, params: Any):
        """The method's result, or the RpcFault it ended with."""
        fn = self.methods.get(name)
        if fn is None:
            return RpcFault(METHOD_NOT_FOUND, f"method not found: {name}")
        if params is None or params == []:
            params = {}
        elif not isinstance(params, dict):
            return InvalidParams("'params' must be an object of named parameters")
        try:
            if getattr(fn, "unlocked", False):  # it locks what it needs itself (long polls)
                return fn(params)
            with self._run_lock:
                return fn(params)
        except RpcFault as e:
            return e
        except Exception:
            log.exception("control method %s failed", name)
            return RpcFault(INTERNAL_ERROR, f"internal error in {name} (see the kampx log)")


def _error(req_id, code: int, message: str, data: dict | None = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": req_id}


def check_params(params: dict, allowed: tuple, required: tuple = ()) -> None:
    """-32602 for an unknown or missing parameter, naming it."""
    for name in params:
        if name not in allowed:
            raise InvalidParams(f"unknown parameter '{name}'")
    for name in required:
        if name not in params:
            raise InvalidParams(f"'{name}' is required")
