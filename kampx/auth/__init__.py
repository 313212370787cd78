"""Digest authentication. credentials: the HA1 digests kampx stores for a subscriber."""

from kampx.auth.credentials import ALGORITHMS, ha1, ha1b, parse_user, subscriber_row

__all__ = ["ALGORITHMS", "ha1", "ha1b", "parse_user", "subscriber_row"]
