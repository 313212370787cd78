"""Digest credentials as kamctl stores them: HA1 digests, never the clear password.

ha1  = H(username:realm:password)          (RFC 2617 / RFC 7616 A1)
ha1b = H(username@domain:realm:password)   (for clients that send user@domain as username)
with H = MD5 or SHA-256 (RFC 8760). The realm of a subscriber is its domain, which for a bare
username is the [auth] realm of the config.
"""

from __future__ import annotations

import hashlib

from kampx.db.base import Subscriber

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

MAX_NAME = 64  # Kamailio's subscriber.username / domain are VARCHAR(64)


def _hasher(algorithm: str):
    try:
        return ALGORITHMS[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unknown digest algorithm '{algorithm}' (MD5, SHA-256)") from None


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    return _hasher(algorithm)(f"{username}:{realm}:{password}".encode()).hexdigest()


def ha1b(username: str, domain: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    return ha1(f"{username}@{domain}", realm, password, algorithm)


def subscriber_row(username: str, domain: str, password: str) -> Subscriber:
    """The row to store for a subscriber: every digest kampx may verify, realm = domain."""
    check_password(password)
    return Subscriber(
        username,
        domain,
        ha1(username, domain, password, "MD5"),
        ha1b(username, domain, domain, password, "MD5"),
        ha1(username, domain, password, "SHA-256"),
        ha1b(username, domain, domain, password, "SHA-256"),
    )


def _check_name(kind: str, value: str) -> None:
    if not value:
        raise ValueError(f"empty {kind}")
    if len(value) > MAX_NAME:
        raise ValueError(f"{kind} '{value[:20]}...' is longer than {MAX_NAME} characters")
    # ':' would make "user:realm:password" ambiguous; ',' is the separator of `add --file`
    bad = next((c for c in value if c.isspace() or not c.isprintable() or c in ":,@"), None)
    if bad is not None:
        raise ValueError(f"{kind} '{value}' contains {bad!r}")


def check_password(password: str) -> None:
    if not password:
        raise ValueError("empty password")
    if "\n" in password or "\r" in password or "\0" in password:
        raise ValueError("the password contains a line break or NUL")


def parse_user(text: str, default_domain: str) -> tuple[str, str]:
    """'user' or 'user@domain' -> (username, domain); a bare user gets `default_domain`.

    ValueError with a one-line reason for a name kampx could not store or authenticate."""
    username, at, domain = text.partition("@")
    if not at:
        domain = default_domain
    _check_name("username", username)
    _check_name("domain", domain)
    return username, domain
