"""Control flow of a route script: Kamailio's `exit` and `drop` as exceptions, so that a
helper route several calls deep can end processing the way a Kamailio route block does.

exit() and drop() are C builtins (kampx/routing/_raise.pyx): exit() ends nearly every
request, and an exception costs a traceback entry for every Python frame it leaves; raised
from C it leaves the script's frames alone (a Python exit() would be one frame more, a
compiled one a traceback frame built for it)."""

from kampx.routing._raise import raisers


class ScriptExit(Exception):
    """exit(): stop running the script for this message (what was sent stays sent)."""


class Dropped(ScriptExit):
    """drop(): stop, and for a reply do not forward it."""


class HandedOff(ScriptExit):
    """The message belongs to another worker's transaction and was passed to it."""


exit, drop = raisers(ScriptExit, Dropped, __name__)
