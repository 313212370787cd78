"""Control flow of a route script: Kamailio's `exit` and `drop` as exceptions, so that a
helper route several calls deep can end processing the way a Kamailio route block does.

Plain Python on purpose (setup.py compiles the rest of the script API): an exception leaving
a compiled function gets a traceback entry made for it (a frame object, ~1.6 k instructions),
and exit() ends nearly every request; raised from here it costs the interpreter's own
entry."""


class ScriptExit(Exception):
    """exit(): stop running the script for this message (what was sent stays sent)."""


class Dropped(ScriptExit):
    """drop(): stop, and for a reply do not forward it."""


class HandedOff(ScriptExit):
    """The message belongs to another worker's transaction and was passed to it."""


def exit():
    """End processing of the current message (Kamailio's `exit`)."""
    raise ScriptExit()


def drop():
    """End processing; a reply is not forwarded (Kamailio's `drop`)."""
    raise Dropped()
