"""Digest authentication of requests against the subscriber table: Kamailio's auth + auth_db
(auth_check, www_authorize / proxy_authorize, the challenges, consume_credentials).

One Authenticator per worker process. The outcome of a check is kept on the message, so that
a challenge sent afterwards can say stale=true and consume_credentials() knows which header
was used.

No user enumeration: an unknown user is verified against a random HA1 of the right size, and
both an unknown user and a wrong password recheck the subscriber table before failing (see
subscribers.py), so the two cost the same work and get the same challenge.

Refused before any lookup, as malformed credentials (-1, "bad_credentials"): a user, domain
or realm longer than subscribers.MAX_NAME_BYTES (no subscriber has one; a name of any length
would let a name spray grow the worker), and a digest-uri that names another target than the
Request-URI (uri_matches: a response captured on its way to one target is no good for
another).
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from kampx import stats as S
from kampx._cparse import SipParseError, parse_uri
from kampx.auth import digest
from kampx.auth._digest import DigestError, find_params, pick
from kampx.auth.digest import verify
from kampx.auth.nonce import NonceState
from kampx.auth.subscribers import name_fits
from kampx.db import StorageError

AUTH_CHALLENGES = S.family(
    "auth", "challenges", S.KIND_COUNTER, "Digest challenges sent", "code", ("401", "407")
)
AUTH_SUCCESSES = S.family("auth", "successes", S.KIND_COUNTER, "Requests authenticated")
AUTH_FAILURES = S.family(
    "auth",
    "failures",
    S.KIND_COUNTER,
    "Failed authentications, by reason",
    "reason",
    (
        "no_credentials",
        "bad_credentials",
        "stale_nonce",
        "replayed",
        "unknown_user",
        "wrong_password",
        "user_mismatch",
    ),
)
STATISTICS = (AUTH_CHALLENGES, AUTH_SUCCESSES, AUTH_FAILURES)

log = logging.getLogger("kampx.auth")
_FORGED, _STALE = NonceState.FORGED, NonceState.STALE  # an enum member read costs a lookup

# Kamailio's auth_db return codes (negative = false in a Kamailio script)
AUTH_OK = 1
AUTH_ERROR = -1
AUTH_INVALID_PASSWORD = -2
AUTH_USER_UNKNOWN = -3
AUTH_STALE_NONCE = -4
AUTH_NO_CREDENTIALS = -5
AUTH_NONCE_REUSED = -6
AUTH_USER_MISMATCH = -8

CHECK_IDS = 1  # auth_check flag: auth user = From user (and To user for REGISTER)

# challenge flags (Kamailio's www_challenge / proxy_challenge / auth_challenge)
QOP_AUTH = 1
QOP_AUTH_INT = 2
FORCE_STALE = 16

# methods that are never challenged: ACK and CANCEL cannot be, PRACK belongs to an INVITE
_NEVER_CHALLENGED = frozenset(("ACK", "CANCEL", "PRACK"))


class Kind(NamedTuple):
    credentials: str  # header the client answers with
    challenge: str  # header of the challenge
    code: int
    reason: str


WWW = Kind("Authorization", "WWW-Authenticate", 401, "Unauthorized")
PROXY = Kind("Proxy-Authorization", "Proxy-Authenticate", 407, "Proxy Authentication Required")

# stored HA1 column per (algorithm, username has @domain)
_COLUMNS = {
    ("MD5", False): "ha1",
    ("MD5", True): "ha1b",
    ("SHA-256", False): "ha1_sha256",
    ("SHA-256", True): "ha1b_sha256",
}

_FAIL = AUTH_FAILURES


class Outcome:
    """What auth_check found, kept on the message as msg.auth_outcome (a C struct:
    authenticator.pxd)."""

    def __init__(self, code: int, kind: Kind, username: str | None = None, stale: bool = False):
        self.code = code
        self.kind = kind
        self.username = username
        self.stale = stale


def kind_for(msg) -> Kind:
    """www authentication for REGISTER, proxy authentication for the rest (auth_check)."""
    return WWW if msg.method == "REGISTER" else PROXY


def offered_algorithms(configured) -> list[str]:
    """[auth] algorithms in the order challenges offer them: SHA-256 first, MD5 last
    (RFC 8760 2.4: most preferred first; MD5 only for the clients that know nothing else)."""
    names = [a.upper() for a in configured]
    return sorted(dict.fromkeys(names), key=lambda a: a == "MD5")


class Authenticator:
    """auth_check and the challenges for one worker process.

    nonces: kampx.auth.nonce.Nonces; subscribers: kampx.auth.subscribers.SubscriberCache;
    stats: the process's kampx.stats.Stats; on_failure(msg): called after each failed
    authentication that carried credentials (the brute-force ban counts them)."""

    def __init__(self, algorithms, nonces, subscribers, stats, on_failure=None):
        self.algorithms = offered_algorithms(algorithms)
        self.nonces = nonces
        self.subscribers = subscribers
        self.stats = stats
        self.on_failure = on_failure
        # stand-in HA1s for unknown users: same length as real ones, never anyone's
        self._decoy = {alg: os.urandom(digest.HEX_LEN[alg] // 2).hex() for alg in digest.HASHES}
        self._storage_error_logged = False

    # ------------------------------------------------------------------ checking ----------

    def check(self, msg, realm: str, kind: Kind, flags: int = 0) -> int:
        """Authenticate `msg` with credentials of `kind` for `realm`; Kamailio's codes."""
        if msg.method in _NEVER_CHALLENGED:
            return AUTH_OK
        outcome = self._check(msg, realm, kind, flags)
        msg.auth_outcome = outcome
        return outcome.code

    def _fail(
        self, msg, kind: Kind, code: int, reason: str, username=None, counts_for_ban: bool = True
    ) -> Outcome:
        self.stats.inc(_FAIL.col(reason))
        if counts_for_ban and self.on_failure is not None:
            self.on_failure(msg)
        return Outcome(code, kind, username, code == AUTH_STALE_NONCE)

    def _check(self, msg, realm: str, kind: Kind, flags: int) -> Outcome:
        found = pick(msg.header_all(kind.credentials), realm)
        if found is None:
            return self._fail(msg, kind, AUTH_NO_CREDENTIALS, "no_credentials", None, False)
        if isinstance(found, DigestError):  # unparseable, or fields missing/malformed
            return self._fail(msg, kind, AUTH_ERROR, "bad_credentials")
        cred = found
        base = cred.base_algorithm
        user, at, domain = cred.username.partition("@")
        if not at:
            domain = realm
        # names no subscriber has are not looked up (they would grow the cache, see
        # subscribers.py); a digest-uri for another target is a response captured elsewhere
        if (
            not (name_fits(user) and name_fits(domain) and name_fits(realm))
            or base not in self.algorithms
            or not uri_matches(cred.uri, msg.original_ruri)
        ):
            return self._fail(msg, kind, AUTH_ERROR, "bad_credentials", cred.username)
        nonce = self.nonces.check(cred.nonce)
        if nonce.state is _FORGED:
            return self._fail(msg, kind, AUTH_ERROR, "bad_credentials", cred.username)
        if nonce.state is _STALE:
            return self._fail(msg, kind, AUTH_STALE_NONCE, "stale_nonce", cred.username, False)

        column = _COLUMNS[(base, bool(at))]
        body = msg.body if cred.qop == "auth-int" else b""
        try:
            sub = self.subscribers.get(user, domain)
            ok = self._verify(cred, sub, column, base, msg.method, body)
            if not ok:
                changed, sub = self.subscribers.recheck(user, domain)
                if changed:
                    ok = self._verify(cred, sub, column, base, msg.method, body)
        except StorageError as e:
            if not self._storage_error_logged:
                log.error("subscriber lookup failed: %s", e)
                self._storage_error_logged = True
            self.stats.inc(_FAIL.col("bad_credentials"))
            return Outcome(AUTH_ERROR, kind, cred.username)
        if not ok:
            if sub is None:
                return self._fail(msg, kind, AUTH_USER_UNKNOWN, "unknown_user", cred.username)
            return self._fail(msg, kind, AUTH_INVALID_PASSWORD, "wrong_password", cred.username)

        if cred.qop is not None:
            # counted only now: a forged response must not burn the client's next nc
            counted = self.nonces.count(nonce, cred.nc_value)
            if counted == 0:
                return self._fail(msg, kind, AUTH_NONCE_REUSED, "replayed", cred.username)
            if counted < 0:
                return self._fail(msg, kind, AUTH_STALE_NONCE, "stale_nonce", cred.username, False)
        if flags & CHECK_IDS and not _ids_match(msg, cred.user):
            return self._fail(msg, kind, AUTH_USER_MISMATCH, "user_mismatch", cred.username)
        self.stats.inc(AUTH_SUCCESSES.base)
        return Outcome(AUTH_OK, kind, cred.username)

    def find_credentials(self, msg, realm: str, kind: Kind):
        """The params of the first Digest credentials for `realm` (case-insensitive, as
        Kamailio compares), a DigestError when only unparseable ones exist, else None."""
        return find_params(msg.header_all(kind.credentials), realm)

    def _verify(self, cred, sub, column: str, base: str, method: str, body: bytes) -> bool:
        stored = getattr(sub, column, "") if sub is not None else ""
        if not stored:
            # unknown user, or a row without this digest: the same work against a decoy
            verify(cred, self._decoy[base], method, body)
            return False
        return verify(cred, stored, method, body)

    # ------------------------------------------------------------------ challenges --------

    def challenge_headers(self, msg, realm: str, kind: Kind, flags: int = 0) -> list[str]:
        """The challenge header lines: one per offered algorithm, all with one fresh nonce.
        With MD5 alone the value has no algorithm parameter (Kamailio's form)."""
        nonce = self.nonces.issue()
        qop = "auth-int" if flags & QOP_AUTH_INT else "auth" if flags & QOP_AUTH else None
        prior = msg.auth_outcome
        stale = bool(flags & FORCE_STALE) or (prior is not None and prior.stale)
        if self.algorithms == ["MD5"]:
            return [f"{kind.challenge}: {digest.challenge(realm, nonce, None, qop, stale)}"]
        return [
            f"{kind.challenge}: {digest.challenge(realm, nonce, alg, qop, stale)}"
            for alg in self.algorithms
        ]

    @staticmethod
    def consume(msg) -> bool:
        """Remove the credentials header that authenticated the request (they are for this
        proxy, not for the next hop). False when nothing was authenticated."""
        outcome = msg.auth_outcome
        if outcome is None or outcome.code != AUTH_OK:
            return False
        msg.remove_header(outcome.kind.credentials)
        return True


_DEFAULT_PORT = {"sip": 5060, "sips": 5061}


def uri_matches(digest_uri: str, request_uri: str) -> bool:
    """Whether the credentials' digest-uri names the target of the Request-URI (RFC 3261
    22.4: they are the same). Equal strings match; otherwise the scheme, the host (case
    aside) and the port (absent = the scheme's default) must be the Request-URI's, and a
    user, when the digest-uri has one, too (escapes decoded); parameters do not count.
    A digest-uri without a user is accepted because SIPp's [authentication] always sends
    sip:REMOTE_IP:REMOTE_PORT (its -auth_uri option replaces that)."""
    if digest_uri == request_uri:
        return True
    try:
        d, r = parse_uri(digest_uri), parse_uri(request_uri)
    except SipParseError:
        return False
    default = _DEFAULT_PORT.get(d.scheme, 0)
    return (
        d.scheme == r.scheme
        and d.host.lower() == r.host.lower()
        and (d.port or default) == (r.port or default)
        and (d.user is None or d.user_unescaped == r.user_unescaped)
    )


def _party_user(msg, to_side: bool) -> str | None:
    """The user of the From URI (the To URI with `to_side`), read from the parsed offsets;
    None when it has none or the URI does not parse."""
    try:
        parts = msg.addr_user_host(to_side)
    except SipParseError:
        return None
    return parts[0] if parts is not None else None


def _ids_match(msg, auth_user: str) -> bool:
    """auth_check flag 1: the auth user is the From user, and for REGISTER also the To user."""
    if _party_user(msg, False) != auth_user:
        return False
    return msg.method != "REGISTER" or _party_user(msg, True) == auth_user
