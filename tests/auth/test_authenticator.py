"""auth_check semantics (kampx/auth/authenticator.py) on parsed messages: Kamailio's return
codes, flag 1, the challenge headers, consume_credentials, and equal work for an unknown
user and a wrong password."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from kampx import stats as S
from kampx.auth.authenticator import AUTH_FAILURES, AUTH_SUCCESSES
from kampx._cparse import parse
from kampx._shm import CounterRows, NonceCounts
from kampx.auth import authenticator as A
from kampx.auth import digest
from kampx.auth.credentials import subscriber_row
from kampx.auth.nonce import Nonces
from kampx.auth.subscribers import SqliteChangeProbe, SubscriberCache
from kampx.db.sqlite import SqliteStorage

REALM = "kampx.test"


class Clock:
    def __init__(self):
        self.ms = 5_000_000

    def __call__(self):
        return self.ms


@pytest.fixture
def env(tmp_path):
    path = str(tmp_path / "kampx.db")
    admin = SqliteStorage(path)
    admin.subscribers.add_many([subscriber_row("alice", REALM, "pw-a"),
                                subscriber_row("bob", REALM, "pw-b")])
    rows = CounterRows(1, S.ncols())
    stats = S.Stats(rows, 0)
    clock = Clock()
    probes = []

    def probe_factory():
        real = SqliteChangeProbe(path)

        def probe():
            probes.append(1)
            return real()
        return probe
    cache = SubscriberCache(lambda: SqliteStorage(path), probe_factory())
    failures = []
    nonces = Nonces(b"k" * 32, NonceCounts(256), 30, clock=clock)
    auth = A.Authenticator(["MD5", "SHA-256"], nonces, cache, stats, on_failure=failures.append)

    yield SimpleNamespace(auth=auth, rows=rows, clock=clock, failures=failures, probes=probes,
                          admin=admin)
    cache.close()
    admin.close()


def request(method="REGISTER", from_user="alice", to_user=None, auth_headers=(), ruri=None,
            from_uri=None):
    ruri = ruri or (f"sip:{REALM}" if method == "REGISTER" else f"sip:5551234@{REALM}")
    to_user = to_user or (from_user if method == "REGISTER" else "5551234")
    lines = [f"{method} {ruri} SIP/2.0",
             "Via: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bKabc",
             f"From: <{from_uri or f'sip:{from_user}@{REALM}'}>;tag=1",
             f"To: <sip:{to_user}@{REALM}>",
             "Call-ID: c1", f"CSeq: 2 {method}"]
    lines += [f"{name}: {value}" for name, value in auth_headers]
    lines += ["Content-Length: 0", "", ""]
    return parse("\r\n".join(lines).encode())


def creds(e, method="REGISTER", user="alice", password="pw-a", realm=REALM, nonce=None,
          uri=None, alg="MD5", qop=None, nc=1):
    nonce = nonce or e.auth.nonces.issue()
    uri = uri or (f"sip:{REALM}" if method == "REGISTER" else f"sip:5551234@{REALM}")
    ha1 = digest.ha1(user, realm, password, alg)
    ncs, cnonce = (f"{nc:08x}", "cn") if qop else (None, None)
    resp = digest.response(alg, ha1, nonce, method, uri, qop, ncs, cnonce)
    v = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
         f'response="{resp}", algorithm={alg}')
    if qop:
        v += f', qop={qop}, nc={ncs}, cnonce="{cnonce}"'
    return v


def check(e, msg, flags=1):
    return e.auth.check(msg, REALM, A.kind_for(msg), flags)


def failures(e, reason):
    return e.rows.get(0, AUTH_FAILURES.col(reason))


def test_no_credentials(env):
    assert check(env, request()) == A.AUTH_NO_CREDENTIALS
    assert failures(env, "no_credentials") == 1 and env.failures == []


def test_success_and_consume(env):
    msg = request(auth_headers=[("Authorization", creds(env))])
    assert check(env, msg) == A.AUTH_OK
    assert env.rows.get(0, AUTH_SUCCESSES.base) == 1
    assert A.Authenticator.consume(msg)
    assert b"Authorization" not in msg.serialize()


def test_invite_uses_proxy_authorization(env):
    www_only = request("INVITE", auth_headers=[("Authorization", creds(env, "INVITE"))])
    assert check(env, www_only) == A.AUTH_NO_CREDENTIALS
    proxy = request("INVITE", auth_headers=[("Proxy-Authorization", creds(env, "INVITE"))])
    assert check(env, proxy) == A.AUTH_OK


@pytest.mark.parametrize("kwargs, code, reason", [
    (dict(password="wrong"), A.AUTH_INVALID_PASSWORD, "wrong_password"),
    (dict(user="nobody", password="x"), A.AUTH_USER_UNKNOWN, "unknown_user"),
    (dict(nonce="Zm9yZ2Vk" * 5 + "Zm9y"), A.AUTH_ERROR, "bad_credentials"),
])
def test_failures(env, kwargs, code, reason):
    msg = request(from_user=kwargs.get("user", "alice"),
                  auth_headers=[("Authorization", creds(env, **kwargs))])
    assert check(env, msg) == code
    assert failures(env, reason) == 1
    assert env.failures == [msg]          # counted towards the brute-force ban


SIPP_RURI = "sip:5551234@127.0.0.1:5060"        # SIPp's INVITE sip:[service]@[remote_ip]:[remote_port]


@pytest.mark.parametrize("method, ruri, uri, ok", [
    ("REGISTER", None, f"sip:{REALM}", True),                          # the same string
    ("REGISTER", None, "sip:KAMPX.test;transport=udp", True),          # host case, parameters
    ("REGISTER", None, f"sip:{REALM}:5060", True),                     # the default port
    ("REGISTER", "sip:127.0.0.1", "sip:127.0.0.1:5060", True),         # SIPp's REGISTER
    ("REGISTER", None, "sip:127.0.0.1:5060", False),                   # another host
    ("REGISTER", None, f"sip:{REALM}:5070", False),                    # another port
    ("REGISTER", None, f"sips:{REALM}", False),                        # another scheme
    ("REGISTER", None, f"sip:alice@{REALM}", False),                   # a user the R-URI lacks
    ("REGISTER", None, REALM, False),                                  # not a URI
    ("INVITE", SIPP_RURI, "sip:127.0.0.1:5060", True),                 # SIPp: no user
    ("INVITE", SIPP_RURI, "sip:5551234@127.0.0.1", True),
    ("INVITE", SIPP_RURI, "sip:%35551234@127.0.0.1:5060", True),       # escapes decoded
    ("INVITE", SIPP_RURI, "sip:5559999@127.0.0.1:5060", False),        # another callee
    ("INVITE", SIPP_RURI, "sip:127.0.0.2:5060", False),
    ("INVITE", "tel:+15551234", "tel:+15551234;phone-context=x", True),
    ("INVITE", "tel:+15551234", "tel:+15559999", False),
])
def test_digest_uri_must_name_the_request_uri_target(env, method, ruri, uri, ok):
    """A response computed for one target is refused for another (a captured INVITE's
    credentials must not call someone else), while SIPp's uri="sip:HOST:PORT" for a
    Request-URI on HOST:PORT and phones' exact copies pass."""
    name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    msg = request(method, ruri=ruri, auth_headers=[(name, creds(env, method, uri=uri))])
    if ok:
        assert check(env, msg) == A.AUTH_OK
    else:
        assert check(env, msg) == A.AUTH_ERROR
        assert failures(env, "bad_credentials") == 1 and env.failures == [msg]


def test_digest_uri_is_compared_with_the_request_uri_as_received(env):
    """The client signed the Request-URI it sent: after a rewrite by the script before
    auth_check, that one still matches and the new one does not."""
    rewritten = "sip:5551234@192.0.2.7:5080"
    for uri, code in ((SIPP_RURI, A.AUTH_OK), (rewritten, A.AUTH_ERROR)):
        msg = request("INVITE", ruri=SIPP_RURI,
                      auth_headers=[("Proxy-Authorization", creds(env, "INVITE", uri=uri))])
        msg.set_ruri(rewritten)
        assert check(env, msg) == code


@pytest.mark.parametrize("user, realm, looked_up", [
    ("a" * 129, REALM, False),                  # the user
    ("a" * 60_000, REALM, False),               # issue 10: 60 kB names, 8 per source
    (f"alice@{'d' * 129}", REALM, False),       # the domain of user@domain
    ("alice", "r" * 129, False),                # the realm (the From domain)
    ("a" * 128, REALM, True),                   # the limit itself: an unknown user
])
def test_overlong_names_are_refused_before_any_lookup(env, monkeypatch, user, realm, looked_up):
    lookups = []
    monkeypatch.setattr(env.auth.subscribers, "get", lambda *a: lookups.append(a))
    monkeypatch.setattr(env.auth.subscribers, "recheck", lambda *a: (False, None))
    msg = request(auth_headers=[("Authorization", creds(env, user=user, realm=realm))])
    code = env.auth.check(msg, realm, A.WWW, 1)
    if looked_up:
        assert (code, lookups) == (A.AUTH_USER_UNKNOWN, [(user, realm)])
    else:
        assert (code, lookups) == (A.AUTH_ERROR, [])
        assert failures(env, "bad_credentials") == 1
    assert env.failures == [msg]


def test_credentials_for_another_realm_are_not_ours(env):
    msg = request(auth_headers=[("Authorization", creds(env, realm="other.test"))])
    assert check(env, msg) == A.AUTH_NO_CREDENTIALS


def test_the_credentials_for_our_realm_are_found_among_others(env):
    msg = request(auth_headers=[("Authorization", creds(env, realm="other.test")),
                                ("Authorization", creds(env))])
    assert check(env, msg) == A.AUTH_OK


def test_flag_1_from_user(env):
    msg = request("INVITE", from_user="bob",
                  auth_headers=[("Proxy-Authorization", creds(env, "INVITE"))])   # alice's
    assert check(env, msg, flags=1) == A.AUTH_USER_MISMATCH
    assert failures(env, "user_mismatch") == 1
    msg = request("INVITE", from_user="bob",
                  auth_headers=[("Proxy-Authorization", creds(env, "INVITE"))])
    assert check(env, msg, flags=0) == A.AUTH_OK


def test_flag_1_a_from_without_the_user_is_a_mismatch(env):
    for uri in (f"sip:{REALM}", f"sip:al%69ce@{REALM}", f"sip:alice2@{REALM}"):
        msg = request("INVITE", from_uri=uri,
                      auth_headers=[("Proxy-Authorization", creds(env, "INVITE"))])
        assert check(env, msg, flags=1) == A.AUTH_USER_MISMATCH, uri
    msg = request("INVITE", from_uri=f"sip:alice@{REALM}:5070;transport=udp",
                  auth_headers=[("Proxy-Authorization", creds(env, "INVITE"))])
    assert check(env, msg, flags=1) == A.AUTH_OK


def test_flag_1_to_user_for_register(env):
    msg = request(from_user="alice", to_user="bob",
                  auth_headers=[("Authorization", creds(env))])
    assert check(env, msg, flags=1) == A.AUTH_USER_MISMATCH


def test_stale_nonce_and_stale_challenge(env):
    nonce = env.auth.nonces.issue()
    env.clock.ms += 31_000
    msg = request(auth_headers=[("Authorization", creds(env, password="wrong", nonce=nonce))])
    assert check(env, msg) == A.AUTH_STALE_NONCE
    assert env.failures == []                   # a stale nonce is not an attack
    assert all("stale=true" in line for line in env.auth.challenge_headers(msg, REALM, A.WWW))


def test_qop_replay(env):
    nonce = env.auth.nonces.issue()
    ok = request(auth_headers=[("Authorization", creds(env, nonce=nonce, qop="auth", nc=1))])
    assert check(env, ok) == A.AUTH_OK
    again = request(auth_headers=[("Authorization", creds(env, nonce=nonce, qop="auth", nc=1))])
    assert check(env, again) == A.AUTH_NONCE_REUSED
    assert failures(env, "replayed") == 1


def test_sha256_and_ha1b(env):
    msg = request(auth_headers=[("Authorization", creds(env, alg="SHA-256"))])
    assert check(env, msg) == A.AUTH_OK
    msg = request(auth_headers=[("Authorization", creds(env, user=f"alice@{REALM}"))])
    assert check(env, msg) == A.AUTH_OK


def test_ack_and_cancel_are_never_challenged(env):
    for method in ("ACK", "CANCEL"):
        assert check(env, request(method)) == A.AUTH_OK


def test_challenge_headers(env):
    msg = request()
    lines = env.auth.challenge_headers(msg, REALM, A.WWW)
    assert [ln.split(":", 1)[0] for ln in lines] == ["WWW-Authenticate"] * 2
    assert lines[0].endswith("algorithm=SHA-256") and lines[1].endswith("algorithm=MD5")
    nonces = {digest.parse_credentials(ln.split(": ", 1)[1])[1]["nonce"] for ln in lines}
    assert len(nonces) == 1
    (proxy,) = A.Authenticator(["MD5"], env.auth.nonces, env.auth.subscribers,
                               env.auth.stats).challenge_headers(msg, REALM, A.PROXY, A.QOP_AUTH)
    assert proxy.startswith(f'Proxy-Authenticate: Digest realm="{REALM}", nonce="')
    assert proxy.endswith(', qop="auth"')


def test_unknown_user_and_wrong_password_do_the_same_work(env, monkeypatch):
    """Same number of digest computations and database probes on both failure paths."""
    calls = []
    real = digest.verify
    monkeypatch.setattr(digest, "verify", lambda *a, **k: calls.append(1) or real(*a, **k))

    def work(user, password):
        calls.clear()
        env.probes.clear()
        msg = request(from_user=user, auth_headers=[("Authorization",
                                                     creds(env, user=user, password=password))])
        assert check(env, msg) < 0
        return len(calls), len(env.probes)
    # warm both cache entries first, then compare the steady state
    work("alice", "x"), work("ghost", "x")
    assert work("alice", "wrong") == work("ghost", "wrong")
