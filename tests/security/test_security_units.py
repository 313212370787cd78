"""kampx/security in isolation: scanner patterns, source keys, pike and the brute-force ban
over the shared RateTable (also across fork), the exemptions, and the config checks."""
from __future__ import annotations

import dataclasses
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kampx import config
from kampx import stats as S
from kampx.security.guard import AUTH_BANS, BAN_DROPPED, PIKE_DROPPED, SCANNER_DROPPED
from kampx._shm import CounterRows, RateTable
from kampx.permissions import AddressTable
from kampx.security import (PIKE_BLOCKED, PIKE_FLOOD, PIKE_OK, AuthBans, FloodGuard, ScannerFilter,
                            SecurityGuard, compile_patterns, ip_key)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


# -- scanner ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ua, dropped", [
    ("friendly-scanner", True), ("FRIENDLY-SCANNER 1.0", True), ("sipcli/v1.8", True),
    ("x VaxSIPUserAgent/3.1", True), ("Linphone/5.0", False), ("", False), (None, False),
    ("friendly scanner", False),
])
def test_default_scanner_list(ua, dropped):
    f = ScannerFilter(config.SecurityConfig().scanner_user_agents)
    assert f.matches(ua) is dropped


def test_scanner_entries_are_regexes_and_empty_list_drops_nothing():
    f = ScannerFilter(["^sip(vicious|cli)", "evil"])
    assert f.matches("SIPvicious 0.3") and f.matches("an EVIL one")
    assert not f.matches("x sipcli")
    assert not ScannerFilter([]).matches("friendly-scanner")


@given(st.lists(st.sampled_from(["friendly-scanner", "sipcli", "VaxSIPUserAgent", "Linphone/5", "x",
                                  " ", "scan", "SIP"]), max_size=6),
       st.randoms(use_true_random=False))
def test_plain_names_match_as_the_case_insensitive_regex_does(parts, rnd):
    # the defaults are plain names: matches() lower-cases an ASCII User-Agent and looks for
    # each; the answer must be the regex's, whatever the case of each letter
    ua = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in "".join(parts))
    names = config.SecurityConfig().scanner_user_agents
    regex = compile_patterns(names)
    assert ScannerFilter(names).matches(ua) is (bool(ua) and regex.search(ua) is not None)


def test_a_user_agent_beyond_ascii_keeps_the_regex_case_rules():
    # re.IGNORECASE folds U+017F (long s) to "s"; str.lower() does not
    assert compile_patterns(["sipcli"]).search("\u017fipcli") is not None
    assert ScannerFilter(["sipcli"]).matches("\u017fipcli")
    assert ScannerFilter(["sipcli"]).matches("SIPCLI \u00e9t\u00e9")


@pytest.mark.parametrize("bad", [["(unclosed"], [""], ["ok", "[a-"]])
def test_bad_patterns(bad):
    with pytest.raises(re.error):
        compile_patterns(bad)


# -- keys ---------------------------------------------------------------------------------------

def test_ip_keys():
    assert ip_key("127.0.0.1") == bytes([127, 0, 0, 1])
    assert ip_key("::ffff:127.0.0.1") == bytes([127, 0, 0, 1])
    assert ip_key("[::1]") == bytes(15) + b"\x01"
    assert ip_key("not-an-ip") is None


# -- pike ---------------------------------------------------------------------------------------

def test_flood_guard_limit_ban_and_expiry():
    clock = Clock()
    g = FloodGuard(RateTable(1024, 7), window_s=2, limit=3, ban_s=10, clock=clock)
    assert [g.check("127.9.0.1") for _ in range(3)] == [PIKE_OK] * 3
    assert g.check("127.9.0.1") == PIKE_FLOOD
    assert g.check("127.9.0.1") == PIKE_BLOCKED
    assert g.check("127.9.0.2") == PIKE_OK             # per source
    clock.t += 10.5
    assert g.check("127.9.0.1") == PIKE_OK             # the ban lapsed: a fresh window


def test_flood_guard_window_resets():
    clock = Clock()
    g = FloodGuard(RateTable(1024, 7), window_s=2, limit=3, ban_s=10, clock=clock)
    for _ in range(5):
        assert [g.check("127.9.0.1") for _ in range(3)] == [PIKE_OK] * 3
        clock.t += 2.1


def test_flood_counts_are_shared_across_fork():
    clock = Clock()
    table = RateTable(1024, 7)
    g = FloodGuard(table, window_s=60, limit=10, ban_s=60, clock=clock)
    pid = os.fork()
    if pid == 0:                                       # another worker
        rc = [g.check("127.9.0.3") for _ in range(6)]
        os._exit(0 if rc == [PIKE_OK] * 6 else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert [g.check("127.9.0.3") for _ in range(5)] == [PIKE_OK] * 4 + [PIKE_FLOOD]


# -- brute-force ban ---------------------------------------------------------------------------

def test_nth_failure_bans():
    clock = Clock()
    b = AuthBans(RateTable(1024, 9), failures=3, window_s=60, ban_s=30, clock=clock)
    assert not b.failed("127.9.1.1") and not b.failed("127.9.1.1")
    assert not b.banned("127.9.1.1")
    assert b.failed("127.9.1.1")                       # the third one bans
    assert b.banned("127.9.1.1") and not b.banned("127.9.1.2")
    assert not b.failed("127.9.1.1")                   # already banned: not a new ban
    clock.t += 30.5
    assert not b.banned("127.9.1.1")


def test_failures_outside_the_window_do_not_add_up():
    clock = Clock()
    b = AuthBans(RateTable(1024, 9), failures=3, window_s=10, ban_s=30, clock=clock)
    for _ in range(5):
        assert not b.failed("127.9.1.3") and not b.failed("127.9.1.3")
        clock.t += 10.5
    assert not b.banned("127.9.1.3")


# -- the guard: exemptions and counters ---------------------------------------------------------

class Msg:
    def __init__(self, ip, ua=None, port=5060):
        self.src = (ip, port)
        self.user_agent = ua


class Shared:
    def __init__(self):
        self.pike = RateTable(1024, 1)
        self.auth_bans = RateTable(1024, 2)
        self.permissions = AddressTable(64)
        self.permissions.load([(200, "127.9.2.0", 24, 0, "carrier")])


def make_guard(**sec):
    keys = {"pike_max": 2, "pike_window_s": 60, "auth_ban_failures": 2, **sec}
    cfg = dataclasses.replace(config.SecurityConfig(), **keys)
    rows = CounterRows(1, S.ncols())
    return SecurityGuard(cfg, 200, Shared(), S.Stats(rows, 0), own_ips={"127.9.3.1"}), rows


def test_guard_pike_exempts_carrier_and_self_and_counts():
    g, rows = make_guard()
    for ip in ("127.9.2.7", "127.9.3.1"):              # carrier group, the proxy itself
        assert all(g.pike_check(Msg(ip)) == PIKE_OK for _ in range(10))
    results = [g.pike_check(Msg("127.9.4.1")) for _ in range(4)]
    assert results == [PIKE_OK, PIKE_OK, PIKE_FLOOD, PIKE_BLOCKED]
    assert rows.get(0, PIKE_DROPPED.base) == 2


def test_guard_bans_and_counts():
    g, rows = make_guard()
    m = Msg("127.9.4.2")
    g.auth_failed(m)
    assert not g.banned(m)
    g.auth_failed(m)
    assert g.banned(m) and g.banned(m)
    assert rows.get(0, AUTH_BANS.base) == 1 and rows.get(0, BAN_DROPPED.base) == 2
    carrier = Msg("127.9.2.8")
    for _ in range(5):
        g.auth_failed(carrier)
    assert not g.banned(carrier)


def test_guard_off_switches():
    g, _ = make_guard(pike_enabled=False, auth_ban_failures=0)
    m = Msg("127.9.4.3")
    assert all(g.pike_check(m) == PIKE_OK for _ in range(10))
    for _ in range(5):
        g.auth_failed(m)
    assert not g.banned(m)


def test_guard_scanner_counts():
    g, rows = make_guard()
    assert g.is_scanner(Msg("127.9.2.9", "friendly-scanner"))       # carrier too
    assert not g.is_scanner(Msg("127.9.4.4", "Linphone"))
    assert rows.get(0, SCANNER_DROPPED.base) == 1


# -- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, keys, word", [
    ("security", {"scanner_user_agents": ["(x"]}, "scanner_user_agents"),
    ("security", {"pike_max": 0}, "pike_max"),
    ("security", {"pike_window_s": 0}, "pike_window_s"),
    ("security", {"auth_ban_s": 0}, "auth_ban_s"),
    ("auth", {"nonce_expires_s": 0}, "nonce_expires_s"),
    ("auth", {"algorithms": ["SHA-512"]}, "algorithms"),
])
def test_config_refuses(section, keys, word):
    with pytest.raises(config.ConfigError, match=word):
        config.from_dict({section: keys})


def test_config_accepts_off_switches():
    cfg = config.from_dict({"security": {"pike_enabled": False, "pike_max": 0,
                                         "auth_ban_failures": 0, "auth_ban_s": 0,
                                         "scanner_user_agents": []}})
    assert cfg.security.scanner_user_agents == ()
