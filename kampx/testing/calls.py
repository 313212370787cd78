"""Watching a route script decide: a private copy of the script whose calls are recorded.

`instrumented(spec, log)` loads the script (kampx.routing.loader: the same checks as
`kampx run`) into a module of its own, then replaces, in that module only, every
script-API function it imported and every function it defines with a wrapper that appends a
Call to `log`. The route API itself, the worker's script and any other copy are untouched:
the wrappers live in the copy's globals, which is where the script's code looks its
functions up. `overrides` {name: function} replace API functions in the copy first (kampx
replay trusts captured credentials that way); they are recorded like the rest.

`record_calls(module, log)` does the same to a script already loaded, in place, and returns
what it replaced (the live trace, kampx.trace, wraps the worker's own script while someone
traces, so the script's module state stays the one the worker built). A log whose
`recording` is False makes the wrappers plain calls through.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable

from kampx import routing
from kampx.routing import loader
from kampx.routing.flow import Dropped, ScriptExit

API = "api"  # a function of the route-script API (lookup, t_relay, ...)
ROUTE = "route"  # a function of the script itself (request_route, REQINIT, ...)

_API_FUNCTIONS = {
    id(fn): name
    for name in routing.__all__
    if inspect.isroutine(fn := getattr(routing, name))  # compiled ones are not FunctionType
}


class Call:
    """One call the script made: `name(args) -> result`, in the order they started.
    `result` is the return value, or "exit" / "drop" when the call ended processing, or
    the exception it raised. `depth` is how many recorded calls enclose it."""

    __slots__ = ("kind", "name", "args", "kwargs", "result", "depth")

    def __init__(self, kind: str, name: str, args: tuple, kwargs: dict, depth: int):
        self.kind = kind
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.result: object = None
        self.depth = depth

    def arguments(self) -> str:
        shown = [_show(a) for a in self.args] + [f"{k}={_show(v)}" for k, v in self.kwargs.items()]
        return ", ".join(shown)

    def __repr__(self) -> str:
        if self.kind == ROUTE:
            return f"route {self.name}"
        return f"{self.name}({self.arguments()}) -> {self.result!r}"

    def __eq__(self, other: object) -> bool:
        """A Call equals the text of its repr, so a test can compare a log with strings."""
        if isinstance(other, str):
            return repr(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _show(value: object) -> str:
    if inspect.isroutine(value):
        return value.__name__
    if value.__class__.__name__ == "Message":  # a route function's msg: not worth a line
        return "msg"
    return repr(value)


class CallLog(list):
    """The calls of one harness, oldest first; `depth` tracks the nesting while recording;
    nothing is recorded while `recording` is False."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.recording = True


def _recorded(kind: str, name: str, fn: Callable, log: CallLog) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not log.recording:
            return fn(*args, **kwargs)
        entry = Call(kind, name, args, kwargs, log.depth)
        log.append(entry)
        log.depth += 1
        try:
            result = fn(*args, **kwargs)
        except Dropped:
            entry.result = "drop"
            raise
        except ScriptExit:
            entry.result = "exit"
            raise
        except Exception as e:
            entry.result = e
            raise
        finally:
            log.depth -= 1
        entry.result = result
        return result

    return call


def instrumented(
    spec: str, log: CallLog, overrides: dict[str, Callable] | None = None
) -> loader.Script:
    """The script `spec` ("builtin:NAME" or a path) loaded privately, its calls going to
    `log`. ScriptError as for `kampx check` when it does not load."""
    script = loader.load(spec)
    namespace = script.module.__dict__
    overrides = overrides or {}
    for name, fn in overrides.items():
        if name not in routing.__all__:
            raise ValueError(f"override {name}: not a function of the route-script API")
        if name in namespace:  # a script that never imported it has nothing to override
            namespace[name] = fn
    record_calls(script.module, log, extra=overrides)
    return loader.Script(script.name, script.path, script.module)


def record_calls(module: types.ModuleType, log: CallLog, extra=()) -> dict[str, object]:
    """Wrap, in `module`'s namespace, its own functions and the route API functions it
    imported (and the names in `extra`) so each call goes to `log`. Returns the replaced
    {name: original}: `module.__dict__.update(originals)` undoes it."""
    namespace = module.__dict__
    own = module.__name__
    originals: dict[str, object] = {}
    for name, value in list(namespace.items()):
        if isinstance(value, types.FunctionType) and value.__module__ == own:
            originals[name] = value
            namespace[name] = _recorded(ROUTE, name, value, log)
        elif id(value) in _API_FUNCTIONS or name in extra:
            originals[name] = value
            namespace[name] = _recorded(API, name, value, log)
    return originals
