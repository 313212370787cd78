"""Workers SIGKILLed while REGISTERs pour in: no deadlock, no binding lost that a 200 OK
acknowledged, in memory and in the database."""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from regkit import bound, db_rows, new_user, register, start_proxy, wait_for
from sipclient import SipClient

SENDERS = 4
MAX_PER_SENDER = 10000    # bounds the load; the senders stop when the kills are over
KILLS = 8
KILL_EVERY_S = 0.3


def _sender(px, users: list, acked: list, refused: list, failed: list,
            stop: threading.Event) -> None:
    """Register each user once, retransmitting like a UA (same request, 4 tries), paced.
    The Contact carries the user, so a binding filed under the wrong AOR would show.
    A 503 with Retry-After is a refusal for want of capacity (overload control: while a
    worker is down its queue waits, on a machine the parallel suite keeps busy), which a UA
    retries later: counted apart, never acknowledged, so nothing is owed for it."""
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        for user in users:
            if stop.is_set():
                return
            contact = c.contact_uri(user)
            req = c.request("REGISTER", f"sip:{px.addrs.proxy}", from_uri=f"sip:{user}@kampx.test",
                            contact=f"<{contact}>", expires=300)
            for _ in range(4):
                c.send(req)
                r = c.response(req, 0.5, skip_provisional=True)
                if r is not None:
                    if r.status == 200:
                        acked.append((user, contact, r.status))
                    elif r.status == 503 and r.get("retry-after"):
                        refused.append(user)
                    else:
                        failed.append((user, contact, r.status))
                    break
            # paced (at most ~1000/s per sender): the load must last through every kill
            # however fast the proxy answers, and stay small enough to check one by one
            time.sleep(0.001)


def _dump(px) -> list:
    """Every AOR of the running proxy's table, through the control channel (ul.dump pages)."""
    from kampx.control.client import ControlClient
    client = ControlClient(os.path.join(px.workdir, "kampx.sock"))
    aors, cursor = [], None
    while True:
        page = client.call("ul.dump", {"limit": 500} if cursor is None else
                           {"limit": 500, "cursor": cursor})
        aors.extend(page["aors"])
        cursor = page["next"]
        if cursor is None:
            return aors


@pytest.mark.timeout(120)
def test_sigkill_workers_during_register_load():
    px = start_proxy(children=3)
    try:
        users = [[new_user("k") for _ in range(MAX_PER_SENDER)] for _ in range(SENDERS)]
        acked, refused, failed = [], [], []
        stop = threading.Event()
        threads = [threading.Thread(target=_sender, args=(px, u, acked, refused, failed, stop))
                   for u in users]
        for t in threads:
            t.start()
        killed = []
        rnd = random.Random(4)
        for _ in range(KILLS):
            time.sleep(KILL_EVERY_S)
            pids = px.worker_pids()
            if pids:
                pid = rnd.choice(pids)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        assert any(t.is_alive() for t in threads), "the load ended before the last kill"
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "senders stuck: a deadlock?"
        assert len(killed) == KILLS
        assert failed == [], failed[:5]
        assert len(refused) < len(acked) / 10, (len(refused), len(acked))
        # the load was real: hundreds of REGISTERs around the kills
        assert len(acked) >= 500, (len(acked), px.log_tail())
        # the proxy is whole again: workers respawned, registrations still work at once
        assert wait_for(lambda: len(px.worker_pids()) == 3, 10.0), px.children()
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            for _ in range(20):
                _, ok = register(c, px, new_user("after"), timeout=1.0)
                assert ok.status == 200
            missing = []
            for user, contact, _ in acked:
                listed = bound(c, px, user)
                if len(listed) != 1 or not listed[0].startswith(f"<{contact}>;expires="):
                    missing.append((user, listed))
            assert missing == [], f"{len(missing)} acknowledged bindings lost: {missing[:5]}"
        # no corrupted entry anywhere: every binding sits under its own AOR, one each
        bad = [a for a in _dump(px) if len(a["contacts"]) != 1
               or not a["contacts"][0]["contact"].startswith(f"sip:{a['aor']}@")]
        assert bad == [], bad[:3]
        # and every acknowledged binding reaches the database (drained on SIGTERM)
        assert px.stop() == 0, px.log_tail()
        in_db = {r["username"] for r in db_rows(px)}
        lost = [u for u, _, _ in acked if u not in in_db]
        assert lost == [], f"{len(lost)} acknowledged bindings not in the database: {lost[:5]}"
    finally:
        px.close()
