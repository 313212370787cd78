"""The scanner drop: requests whose User-Agent names a known SIP scanner are dropped
without a reply (the seed's `$ua =~ "friendly-scanner|sipcli|VaxSIPUserAgent"`).

Each configured entry is a regular expression searched case-insensitively anywhere in the
User-Agent, so a plain name is a substring match. All entries are joined into one pattern,
compiled once, so the check is one regex search whatever the list's length.
"""

from __future__ import annotations

import re


def compile_patterns(patterns) -> re.Pattern | None:
    """One case-insensitive pattern for the list; None for an empty list (nothing dropped).
    re.error names a bad entry."""
    parts = []
    for p in patterns:
        if not p:
            raise re.error("empty pattern")
        try:
            re.compile(p)
        except re.error as e:
            raise re.error(f"'{p}': {e}") from None
        parts.append(f"(?:{p})")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class ScannerFilter:
    def __init__(self, patterns):
        self._search = None
        rx = compile_patterns(patterns)
        if rx is not None:
            self._search = rx.search

    def matches(self, user_agent: str | None) -> bool:
        """True when the User-Agent names a scanner (no User-Agent never does)."""
        if not user_agent or self._search is None:
            return False
        return self._search(user_agent) is not None
