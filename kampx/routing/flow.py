"""Control flow of a route script: Kamailio's `exit` and `drop` as exceptions, so that a
helper route several calls deep can end processing the way a Kamailio route block does."""


class ScriptExit(Exception):
    """exit(): stop running the script for this message (what was sent stays sent)."""


class Dropped(ScriptExit):
    """drop(): stop, and for a reply do not forward it."""


class HandedOff(ScriptExit):
    """The message belongs to another worker's transaction and was passed to it."""
