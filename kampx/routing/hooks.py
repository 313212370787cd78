"""Running the route script's functions: request_route, reply_route, failure_route and
branch_route, each with Kamailio's flow (exit() ends processing, drop() also drops a reply)
and one policy for errors: a route function that raises is counted (script.exceptions),
reported (logged once per distinct error), and the message is answered or passed on as if
the function had returned. A request whose request_route raised gets a 500.

The worker calls request_route; tm calls the other three around its transactions. The
functions the script calls find the message in kampx.routing.context.ctx, which these runners
set and restore.
"""

from __future__ import annotations

from kampx import sl
from kampx import stats as S
from kampx.routing.context import ctx
from kampx.routing.flow import Dropped, ScriptExit
from kampx.stats.core import DROP_REQUESTS

SCRIPT_ERRORS = S.family(
    "script",
    "exceptions",
    S.KIND_COUNTER,
    "Exceptions raised by the route script (the request got a 500)",
)
STATISTICS = (SCRIPT_ERRORS,)


class Hooks:
    """One worker's runners for `script` (a kampx.routing.loader.Script). `report(where,
    exc)` logs an error; the attributes `reply_route`, `failure_route` and `branch_route`
    are None when the script has no such function (tm then skips the call)."""

    def __init__(self, script, worker, stats, report):
        self._script = script
        self._worker = worker
        self._stats = stats
        self._report = report
        self.reply_route = self._run_reply_route if script.reply_route else None
        self.failure_route = self._run_failure_route if script.failure_route else None
        self.branch_route = self._run_branch_route if script.branch_route else None

    def request_route(self, msg) -> None:
        ctx.worker = self._worker
        ctx.msg = msg
        try:
            self._script.request_route(msg)
        except Dropped:
            self._stats.inc(DROP_REQUESTS.base)
        except ScriptExit:
            pass
        except Exception as e:
            self._stats.inc(SCRIPT_ERRORS.base)
            self._report("request_route", e)
            sl.send_reply(self._worker, msg, 500, "Server Internal Error")
        finally:
            ctx.msg = None

    def _run_reply_route(self, reply) -> bool:
        """False when the script dropped the reply."""
        saved = ctx.msg
        ctx.msg = reply
        try:
            self._script.reply_route(reply)
            return True
        except Dropped:
            return False
        except ScriptExit:
            return True
        except Exception as e:
            self._stats.inc(SCRIPT_ERRORS.base)
            self._report("reply_route", e)
            return True
        finally:
            ctx.msg = saved

    def _run_failure_route(self, t, request) -> None:
        self.run_failure_route(self._script.failure_route, t, request)

    def run_failure_route(self, route, t, request) -> None:
        """`route(request)`: the failure route t_on_failure() armed, or the script's
        failure_route, for transaction t whose branches all failed."""
        saved = ctx.msg, ctx.txn
        ctx.msg, ctx.txn = request, t
        try:
            route(request)
        except ScriptExit:
            pass
        except Exception as e:
            self._stats.inc(SCRIPT_ERRORS.base)
            self._report("failure_route", e)
        finally:
            ctx.msg, ctx.txn = saved

    def _run_branch_route(self, msg) -> None:
        try:
            self._script.branch_route(msg)
        except ScriptExit:
            pass
        except Exception as e:
            self._stats.inc(SCRIPT_ERRORS.base)
            self._report("branch_route", e)
