"""Guarantees that were sound before issue 10 and must stay so (docs/security.md lists the
tests that keep each one): no algorithm downgrade, and SQL that is only ever data."""
from __future__ import annotations

import pytest

from authkit import AuthProxy, answer, challenge, digest_header, with_credentials
from sipclient import parse_challenge

USERS = {"70001": "pw-70001"}


@pytest.fixture(scope="module")
def sha_only():
    p = AuthProxy(USERS, config={"auth": {"algorithms": ["SHA-256"]}}).start()
    yield p
    p.close()


def test_md5_answer_refused_when_only_sha256_is_offered(sha_only):
    """A client (or a man in the middle rewriting the challenge) answering with MD5 where
    only SHA-256 was offered is refused: MD5 is not a fallback the proxy did not offer."""
    with sha_only.client("70001") as c:
        req, ch = challenge(c, "70001")
        offered = [parse_challenge(v) for v in ch.get_all("www-authenticate")]
        assert [o.get("algorithm") for o in offered] == ["SHA-256"]
        params = dict(offered[0], algorithm="MD5")
        again = with_credentials(req, digest_header(req, params, "70001", USERS["70001"],
                                                    algorithm="MD5"))
        c.send(again)
        assert c.final(again).status == 401
        # the control: the same user answering SHA-256 registers
        req, ch = challenge(c, "70001")
        assert answer(c, req, ch, "70001", USERS["70001"], prefer=("SHA-256",)).status == 200


# valid SIP URI users (RFC 3261: ' ; / * are allowed unescaped), invalid as SQL literals
NASTY = ["o'brien", "x'OR'1'='1", "a';DROP/**/TABLE/**/subscriber;--"]


@pytest.fixture(scope="module")
def nasty():
    p = AuthProxy({**USERS, **{n: f"pw-{i}" for i, n in enumerate(NASTY)}}).start()
    yield p
    p.close()


@pytest.mark.parametrize("i", range(len(NASTY)))
def test_sql_in_a_username_is_just_a_name(nasty, i):
    """Users whose names are SQL fragments were added by kampxctl and register with their
    own password; the table is intact (the plain user still registers)."""
    name = NASTY[i]
    with nasty.client(name) as c:
        req, ch = challenge(c, name)
        assert answer(c, req, ch, name, f"pw-{i}").status == 200
        req, ch = challenge(c, name)
        assert answer(c, req, ch, name, "wrong").status == 401
    with nasty.client("70001") as c:
        req, ch = challenge(c, "70001")
        assert answer(c, req, ch, "70001", USERS["70001"]).status == 200


def test_sql_as_an_unknown_username_is_an_unknown_user(nasty):
    with nasty.client("x") as c:
        req, ch = challenge(c, "zz'OR/**/1=1;--")
        assert answer(c, req, ch, "zz'OR/**/1=1;--", "anything").status == 401
