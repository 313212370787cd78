"""Script functions of Kamailio's auth and auth_db modules (kampx/auth): digest
authentication against the subscriber table, and the challenges:

    if not auth_check(from_domain(), "subscriber", 1):
        auth_challenge(from_domain(), 0)
        exit()
    consume_credentials()

Functions returning Kamailio's codes return a Result: an int (1, -2, ...) that is false when
negative, so `if not auth_check(...)` reads as `if (!auth_check(...))` does in Kamailio.

Per worker, the authenticator (nonces, subscriber cache) is built on first use, after fork,
and kept in worker.modules."""

from __future__ import annotations

from kampx import methods as _M
from kampx.auth import authenticator as _a
from kampx.auth.authenticator import AUTH_CHALLENGES
from kampx.routing.context import Result, ctx, result
from kampx.routing.security import guard
from kampx.sl import send_reply

SUBSCRIBER_TABLE = "subscriber"

__all__ = [
    "auth_check",
    "www_authorize",
    "proxy_authorize",
    "has_credentials",
    "www_challenge",
    "proxy_challenge",
    "auth_challenge",
    "consume_credentials",
    "is_subscriber",
]


def _auth(w):
    """The worker's Authenticator, built on first use (after fork)."""
    a = w.modules.get("auth")
    if a is None:
        a = _new_auth(w)
    return a


def _new_auth(w):
    """Build the worker's Authenticator (a Python function: the storage opener is a
    closure, which a C function cannot hold)."""
    from kampx.auth.nonce import Nonces
    from kampx.auth.subscribers import SqliteChangeProbe, SubscriberCache
    from kampx.db import open_storage

    cfg, shared = w.cfg, w.ctx.shared
    cache = SubscriberCache(lambda: open_storage(cfg), SqliteChangeProbe(cfg.db_path()))
    a = w.modules["auth"] = _a.Authenticator(
        cfg.auth.algorithms,
        Nonces(shared.secret, shared.nonces, cfg.auth.nonce_expires_s),
        cache,
        w.stats,
        on_failure=guard(w).auth_failed,
    )
    return a


def _realm(realm) -> str:
    """The realm argument, or the configured [auth] realm when the script has none
    (a From without a host)."""
    return str(realm) if realm else ctx.worker.cfg.auth.realm


def _table(table: str) -> None:
    if table != SUBSCRIBER_TABLE:
        raise ValueError(f"auth: unknown table '{table}' (only '{SUBSCRIBER_TABLE}')")


# ------------------------------------------------------------------ authentication -------


def auth_check(realm, table: str = SUBSCRIBER_TABLE, flags: int = 0) -> Result:
    """Authenticate the request: www credentials (Authorization) for REGISTER, proxy
    credentials (Proxy-Authorization) for the rest. flags 1: the auth user must also be the
    From user (and the To user for a REGISTER). Returns 1, or Kamailio's failure codes:
    -1 error/malformed (also a name over 128 bytes, a digest-uri naming another target than
    the Request-URI), -2 wrong password, -3 unknown user, -4 stale nonce, -5 no credentials,
    -6 nonce-count replayed, -8 auth user mismatch."""
    _table(table)
    w, msg = ctx.worker, ctx.msg
    return result(_auth(w).check(msg, _realm(realm), _a.kind_for(msg), int(flags)))


def www_authorize(realm, table: str = SUBSCRIBER_TABLE) -> Result:
    """Check Authorization credentials (whatever the method)."""
    _table(table)
    w, msg = ctx.worker, ctx.msg
    return result(_auth(w).check(msg, _realm(realm), _a.WWW))


def proxy_authorize(realm, table: str = SUBSCRIBER_TABLE) -> Result:
    """Check Proxy-Authorization credentials (whatever the method)."""
    _table(table)
    w, msg = ctx.worker, ctx.msg
    return result(_auth(w).check(msg, _realm(realm), _a.PROXY))


def has_credentials(realm) -> bool:
    """True when the request carries Digest credentials for `realm` (either header)."""
    w, msg = ctx.worker, ctx.msg
    a = _auth(w)
    r = _realm(realm)
    return any(isinstance(a.find_credentials(msg, r, kind), dict) for kind in (_a.WWW, _a.PROXY))


def _challenge(kind, realm, flags) -> bool:
    w, msg = ctx.worker, ctx.msg
    if msg.method_id == _M.ACK:  # an ACK is never answered
        return False
    headers = _auth(w).challenge_headers(msg, _realm(realm), kind, int(flags))
    ok = send_reply(w, msg, kind.code, kind.reason, headers)
    if ok:
        w.stats.inc(AUTH_CHALLENGES.col(str(kind.code)))
    return ok


def www_challenge(realm, flags: int = 0) -> bool:
    """Reply 401 Unauthorized with WWW-Authenticate. flags: 1 offer qop=auth, 2 qop=auth-int,
    16 stale=true (also set by itself when the credentials' nonce was only stale)."""
    return _challenge(_a.WWW, realm, flags)


def proxy_challenge(realm, flags: int = 0) -> bool:
    """Reply 407 Proxy Authentication Required with Proxy-Authenticate (flags as above)."""
    return _challenge(_a.PROXY, realm, flags)


def auth_challenge(realm, flags: int = 0) -> bool:
    """401 for REGISTER, 407 for anything else (Kamailio's auth_challenge)."""
    return _challenge(_a.kind_for(ctx.msg), realm, flags)


def consume_credentials() -> bool:
    """Remove the credentials that authenticated the request before it is relayed."""
    return _a.Authenticator.consume(ctx.msg)


def is_subscriber(uri, table: str = SUBSCRIBER_TABLE, flags: int = 0) -> Result:
    """Whether the user of SIP URI `uri` is a subscriber (Kamailio's auth_db is_subscriber):
    1 yes, -1 no, -2 `uri` is not a SIP URI with a user. flags 1: match the URI's host as
    the subscriber's domain too (else the user name alone)."""
    _table(table)
    from kampx._cparse import SipParseError, parse_uri

    try:
        u = parse_uri(uri) if uri else None
    except SipParseError:
        u = None
    if u is None or not u.user:
        return result(-2)
    cache = _auth(ctx.worker).subscribers
    found = cache.get(u.user, u.host if int(flags) & 1 else None)
    return result(1 if found is not None else -1)
