"""Loading a route script, and checking it before any packet reaches it.

`load("builtin:kamailio101")` or `load("/path/script.py")` returns a Script. What can be
checked at load time is: the file compiles; `request_route(msg)` exists; every function a
route function calls is defined somewhere (the script, its imports, Python's builtins); and
calls to the kampx API pass a number of arguments the function accepts. A problem is a
ScriptError whose message names the file and line, one line for the operator.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import sys
import types
from collections.abc import Callable
from typing import Any, TypeGuard

BUILTIN_PREFIX = "builtin:"
HOOKS = ("request_route", "reply_route", "failure_route", "branch_route")


class ScriptError(Exception):
    """The route script cannot be used; str() is the operator's one line."""


class Script:
    __slots__ = ("name", "path", "module") + HOOKS

    def __init__(self, name: str, path: str, module: types.ModuleType):
        self.name = name
        self.path = path
        self.module = module
        for hook in HOOKS:
            setattr(self, hook, getattr(module, hook, None))


def _locate(spec: str) -> tuple[str, str]:
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        if not name.isidentifier():
            raise ScriptError(f"route script '{spec}': no such built-in script")
        path = os.path.join(os.path.dirname(__file__), "builtin", name + ".py")
        if not os.path.exists(path):
            raise ScriptError(f"route script '{spec}': no such built-in script")
        return spec, path
    path = os.path.abspath(spec)
    if not os.path.exists(path):
        raise ScriptError(f"route script {spec}: no such file")
    return spec, path


def load(spec: str) -> Script:
    name, path = _locate(spec)
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ScriptError(f"route script {path}: {e.strerror}") from None
    try:
        tree = ast.parse(source, filename=path)
        code = compile(tree, path, "exec")
    except SyntaxError as e:
        raise ScriptError(f"{path}:{e.lineno}: {e.msg}") from None
    modname = "kampx_script_" + os.path.splitext(os.path.basename(path))[0]
    module = types.ModuleType(modname)
    module.__file__ = path
    sys.modules[modname] = module
    try:
        exec(code, module.__dict__)
    except Exception as e:
        raise ScriptError(f"{path}:{_error_line(e, path)}: {type(e).__name__}: {e}") from None
    _check(tree, module, path)
    return Script(name, path, module)


def _error_line(e: BaseException, path: str) -> int:
    tb = e.__traceback__
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _check(tree: ast.Module, module: types.ModuleType, path: str) -> None:
    rr = getattr(module, "request_route", None)
    if not callable(rr):
        raise ScriptError(f"{path}: no request_route(msg) function")
    for hook in HOOKS:
        fn = getattr(module, hook, None)
        if fn is None:
            continue
        if not callable(fn):
            raise ScriptError(f"{path}: {hook} is not a function")
        try:
            inspect.signature(fn).bind(object())
        except TypeError:
            raise ScriptError(
                f"{path}:{fn.__code__.co_firstlineno}: {hook} must take one argument (the message)"
            ) from None
    known = set(module.__dict__) | set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            for a in args.posonlyargs + args.args + args.kwonlyargs:
                known.add(a.arg)
            for star in (args.vararg, args.kwarg):
                if star is not None:
                    known.add(star.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            known.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                known.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            known.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            known.update(node.names)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        fname = node.func.id
        if fname not in known:
            raise ScriptError(f"{path}:{node.lineno}: unknown function {fname}()")
        target = module.__dict__.get(fname)
        if not _is_api(target):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
        try:
            inspect.signature(target).bind(*node.args, **keywords)
        except TypeError as e:
            raise ScriptError(f"{path}:{node.lineno}: {fname}(): {e}") from None


def _is_api(fn: object) -> TypeGuard[Callable[..., Any]]:
    return callable(fn) and getattr(fn, "__module__", "").startswith("kampx.")
