"""[dispatcher] and [routing] carrier_set: defaults and one-line errors."""
import pytest

from kampx import config as kconfig


def test_defaults():
    cfg = kconfig.from_dict({})
    ds = cfg.dispatcher
    assert (ds.ping_interval, ds.probing_threshold, ds.inactive_threshold, ds.probing_mode) == (
        10, 1, 1, 0)
    assert ds.ping_reply_codes == "class=2" and ds.ping_from == "sip:dispatcher@localhost"
    assert cfg.routing.carrier_set == 0


@pytest.mark.parametrize("keys, message", [
    ({"probing_mode": 2}, "[dispatcher] probing_mode: 0"),
    ({"probing_threshold": 0}, "[dispatcher] probing_threshold: must be at least 1"),
    ({"inactive_threshold": 0}, "[dispatcher] inactive_threshold: must be at least 1"),
    ({"ping_interval": 1, "ping_timeout_ms": 1500}, "[dispatcher] ping_timeout_ms: 1 .. "),
    ({"ping_reply_codes": "class=2;code=99"}, "'code=99' is not class=1..6 or code=100..699"),
    ({"ping_from": "dispatcher@localhost"}, "[dispatcher] ping_from: 'dispatcher@localhost'"),
    ({"ping_interval": -1}, "[dispatcher] ping_interval: expected a non-negative integer"),
    ({"pings": 1}, "unknown key 'pings' in [dispatcher]"),
])
def test_bad_values_are_one_line(keys, message):
    with pytest.raises(kconfig.ConfigError) as e:
        kconfig.from_dict({"dispatcher": keys})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_probing_off_accepts_any_timeout():
    cfg = kconfig.from_dict({"dispatcher": {"ping_interval": 0, "ping_timeout_ms": 99999}})
    assert cfg.dispatcher.ping_interval == 0


def test_carrier_set():
    assert kconfig.from_dict({"routing": {"carrier_set": 3}}).routing.carrier_set == 3
    with pytest.raises(kconfig.ConfigError, match=r"\[routing\] carrier_set"):
        kconfig.from_dict({"routing": {"carrier_set": -1}})
