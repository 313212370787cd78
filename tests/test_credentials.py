"""kampx.auth.credentials: HA1 digests as kamctl stores them (vectors from md5sum/sha256sum)."""
import pytest

from kampx.auth.credentials import ha1, ha1b, parse_user, subscriber_row

MD5_ALICE = "0e54fb63235d26a41069613cb663892c"        # md5("alice:kampx.test:secret")
MD5B_ALICE = "39f419ba7f5a5e6ded47b39a99bb82b3"       # md5("alice@kampx.test:kampx.test:secret")
SHA_ALICE = "2a4fb0fb4dbb0e4d9e612892fecb82717bc808bdab3669e1ccf848e394c81026"
SHAB_ALICE = "d32df11d5632c476fabfcb21a6dc3c761d210f675613df48cf5c06338c848bb5"


def test_ha1_md5_and_sha256():
    assert ha1("alice", "kampx.test", "secret") == MD5_ALICE
    assert ha1("alice", "kampx.test", "secret", "SHA-256") == SHA_ALICE
    assert ha1("alice", "kampx.test", "secret", "sha-256") == SHA_ALICE
    # RFC 7616 3.9.1's user, realm and password
    assert ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256") == \
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    assert ha1("Mufasa", "http-auth@example.org", "Circle of Life") == \
        "3d78807defe7de2157e2b0b6573a855f"


def test_ha1b_is_user_at_domain():
    assert ha1b("alice", "kampx.test", "kampx.test", "secret") == MD5B_ALICE
    assert ha1b("alice", "kampx.test", "kampx.test", "secret", "SHA-256") == SHAB_ALICE


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown digest algorithm"):
        ha1("a", "b", "c", "SHA-512")


def test_subscriber_row_holds_digests_only():
    row = subscriber_row("alice", "kampx.test", "secret")
    assert row == ("alice", "kampx.test", MD5_ALICE, MD5B_ALICE, SHA_ALICE, SHAB_ALICE)
    assert "secret" not in "".join(row)


def test_realm_is_the_domain():
    row = subscriber_row("alice", "other.test", "secret")
    assert row.ha1 == ha1("alice", "other.test", "secret")
    assert row.ha1 != MD5_ALICE


@pytest.mark.parametrize("text,expected", [
    ("alice", ("alice", "kampx.test")),
    ("alice@other.test", ("alice", "other.test")),
    ("+4930123", ("+4930123", "kampx.test")),
])
def test_parse_user(text, expected):
    assert parse_user(text, "kampx.test") == expected


@pytest.mark.parametrize("text,reason", [
    ("", "empty username"),
    ("@kampx.test", "empty username"),
    ("alice@", "empty domain"),
    ("al ice", "contains"),
    ("al:ice", "contains"),
    ("al,ice", "contains"),
    ("alice@a@b", "contains"),
    ("a" * 65, "longer than 64"),
    ("al\tice", "contains"),
])
def test_parse_user_rejects(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_user(text, "kampx.test")


@pytest.mark.parametrize("password", ["", "a\nb", "a\rb"])
def test_bad_passwords(password):
    with pytest.raises(ValueError):
        subscriber_row("alice", "kampx.test", password)
