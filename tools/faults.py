#!/usr/bin/env python3
"""Faults under load: one kampx (2 workers, the built-in script) carries a steady load while
its parts are made to fail, one after the other, and each fault is judged on what callers saw.

The load, for the whole run: SIPp carrier-in calls at --rate (trunk -> lookup -> a SIPp phone;
INVITE to BYE through the proxy) and a registration ledger: a client that registers a new
subscriber every 40 ms with digest and notes each one acknowledged with 200. The faults, each
followed by --settle seconds:

  worker killed       SIGKILL to a worker            recovery: its replacement titled
  timer killed        SIGKILL to the timer process   recovery: respawned
  db writer killed    SIGKILL to the db writer       recovery: respawned
  ctl killed          SIGKILL to the control process recovery: respawned and answering
  worker stopped 5 s  SIGSTOP, 5 s, SIGCONT          recovery: calls through it again
  reload              SIGHUP                         recovery: every worker replaced
  location full       bindings up to [usrloc] capacity, then one more: refused with 503 (never
                      acknowledged); recovery: the filler unregistered, registrations accepted
  database locked     another process holds an exclusive lock on the database for --settle s
                      (every write refused, as with a read-only file: a file system cannot be
                      remounted read-only under open files); recovery: a registration made
                      during the outage is in the database
  disk full           its file system filled up for --settle s, then freed; likewise
  database read-only  the proxy stopped, its file system remounted read-only, the proxy
                      started on it; --settle s later remounted writable; likewise
  proxy restarted     SIGTERM, then kampx run again  recovery: the first call answered; every
                      registration acknowledged before (during the outages too) loaded back

The database gets a file system of its own for the disk-full fault: a small tmpfs mounted for
the run (root only; without it that fault is skipped and said so).

Per fault: calls that failed while it lasted (SIPp's per-second counts, from the fault to the
end of its settle time), the recovery time, and at the very end whether every acknowledged
registration is still in the location table (the whole ledger checked with ul.lookup), and
whether calls and registrations still go through (no lock left held by a killed process).
Loopback only, bounded in calls and time; only processes started here are stopped.

    .venv/bin/python tools/faults.py                 # about 3 minutes
    .venv/bin/python tools/faults.py --rate 50 --settle 6
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for p in (REPO, os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "wire")):
    sys.path.insert(0, p)

import proxyctl  # noqa: E402
import sipprun  # noqa: E402
import wirekit  # noqa: E402
from sipclient import SipClient, authorize  # noqa: E402

CAPACITY = 3000                       # [usrloc] capacity: the location-full fault fills it
SUBS = [proxyctl.Subscriber(str(40000 + i), f"fault-{i:05d}") for i in range(CAPACITY + 100)]
CALLEE = proxyctl.Subscriber("49999", "fault-callee")
MARKS = [proxyctl.Subscriber(str(48000 + i), f"fault-mark-{i}") for i in range(4)]
PHONE_PORT, UAC_PORT = 5062, 5064


class FaultTarget(proxyctl.KampxTarget):
    """The wire tests' kampx with a small location table, provisioned once (restartable)."""

    provisioned = False
    db_dir: str | None = None         # the database's own file system, when mounted

    def write_config(self) -> None:
        super().write_config()
        with open(self.config_path) as f:
            text = f.read()
        if self.db_dir:
            import re
            db = os.path.join(self.db_dir, "kampx.db").lstrip("/")
            text = re.sub(r'(?m)^\[db\]\nurl = .*$', f'[db]\nurl = "sqlite:///{db}"', text)
        with open(self.config_path, "w") as f:
            f.write(text + f"\n[usrloc]\ncapacity = {CAPACITY}\n")

    def provision(self) -> None:
        if not self.provisioned:
            super().provision()
            self.provisioned = True

    def db_path(self) -> str:
        return os.path.join(self.db_dir or self.workdir, "kampx.db")

    def rpc(self, method: str, params=None):
        from kampx.control.client import ControlClient
        return ControlClient(os.path.join(self.workdir, "kampx.sock"), 2.0).call(method, params)

    def titled(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for pid in self._children():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            out.setdefault(title.split(" sock=")[0], []).append(pid)
        return out


def register(c: SipClient, target, sub, expires: int = 3600) -> int:
    """REGISTER -> 401 -> REGISTER with credentials; the final status (0: no answer)."""
    req = c.request("REGISTER", f"sip:{target.realm}", from_uri=f"sip:{sub.user}@{target.realm}",
                    contact=f"<sip:{sub.user}@{c.ip}:{c.port}>", expires=expires)
    c.send(req)
    ch = c.recv(2.0, match=lambda m: not m.is_request and m.call_id == req.get("call-id")
                and m.status >= 200)
    if ch is None or ch.status != 401:
        return ch.status if ch is not None else 0
    req2 = authorize(req, ch, sub.user, sub.password)
    c.send(req2)
    ok = c.recv(2.0, match=lambda m: not m.is_request and m.call_id == req2.get("call-id")
                and m.cseq[0] == req2.cseq[0] and m.status >= 200)
    return ok.status if ok is not None else 0


class Ledger(threading.Thread):
    """Registers SUBS[0:LEDGER_SIZE] one by one, round and round; notes the acknowledged."""

    SIZE = 400

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.acked: set[str] = set()
        self.refused: dict[int, int] = {}
        self.running = True

    def run(self) -> None:
        with SipClient(self.target.addrs.client, 0, proxy=self.target.proxy) as c:
            i = 0
            while self.running:
                sub = SUBS[i % self.SIZE]
                status = register(c, self.target, sub)
                if status == 200:
                    self.acked.add(sub.user)
                else:
                    self.refused[status] = self.refused.get(status, 0) + 1
                i += 1
                time.sleep(0.04)


def call_probe(target, timeout: float = 30.0) -> float | None:
    """Seconds until a carrier call to the callee is answered (200), a call tried every 0.2 s."""
    t0 = time.monotonic()
    with SipClient(target.addrs.carrier, 0, proxy=target.proxy) as c:
        while time.monotonic() - t0 < timeout:
            inv = wirekit.carrier_invite(c, target, CALLEE.user)
            cid = inv.get("call-id")
            r = c.recv(1.0, match=lambda m, cid=cid: not m.is_request and m.call_id == cid
                       and m.status >= 200)
            if r is not None and r.status == 200:
                from sipclient import in_dialog
                c.send(in_dialog("ACK", inv, r))
                bye = in_dialog("BYE", inv, r, cseq=2)
                c.send(bye)
                return time.monotonic() - t0
            time.sleep(0.2)
    return None


def until(pred, timeout: float = 30.0, step: float = 0.05) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred():
                return time.monotonic() - t0
        except Exception:
            pass
        time.sleep(step)
    return None


def respawned(target, title: str, old: int):
    return lambda: any(p != old for p in target.titled().get(title, []))


# ------------------------------------------------------------------------------ faults --

def kill(target, title: str):
    old = target.titled()[title][0]
    os.kill(old, signal.SIGKILL)
    return until(respawned(target, title, old))


def kill_ctl(target):
    title = "kampx: ctl"
    old = target.titled()[title][0]
    os.kill(old, signal.SIGKILL)
    return until(lambda: respawned(target, title, old)() and target.rpc("core.uptime") is not None)


def stop_worker(target):
    pid = target.titled()["kampx: udp receiver child=1"][0]
    os.kill(pid, signal.SIGSTOP)
    time.sleep(5.0)
    os.kill(pid, signal.SIGCONT)
    return call_probe(target)


def reload(target):
    before = {p for t, ps in target.titled().items() if "receiver" in t for p in ps}
    os.kill(target.pid, signal.SIGHUP)
    return until(lambda: (lambda now: len(now) == 2 and not now & before)(
        {p for t, ps in target.titled().items() if "receiver" in t for p in ps}))


def location_full(target, report: dict):
    """Fill the table with the subscribers the ledger does not use, then one more."""
    fillers = SUBS[Ledger.SIZE:]
    codes: dict[int, int] = {}
    with SipClient(target.addrs.phone, 0, proxy=target.proxy) as c:
        for sub in fillers:
            s = register(c, target, sub, expires=600)
            codes[s] = codes.get(s, 0) + 1
        report["fill"] = dict(sorted(codes.items()))
        t0 = time.monotonic()
        for sub in fillers:
            register(c, target, sub, expires=0)
    back = until(lambda: register_once(target) == 200, 10)
    return None if back is None else time.monotonic() - t0


def register_once(target) -> int:
    with SipClient(target.addrs.client, 0, proxy=target.proxy) as c:
        return register(c, target, SUBS[0])


def mount_db_dir() -> str | None:
    import subprocess
    d = tempfile.mkdtemp(prefix="kampx-faults-db-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", d],
                       capture_output=True)
    if r.returncode != 0:
        os.rmdir(d)
        return None
    return d


def in_database(target, user: str) -> bool:
    import sqlite3
    try:
        con = sqlite3.connect(f"file:{target.db_path()}?mode=ro", uri=True, timeout=1.0)
        con.execute("SELECT 1 FROM location LIMIT 1")
    except sqlite3.OperationalError:     # a WAL database on a read-only file system
        con = sqlite3.connect(f"file:{target.db_path()}?mode=ro&immutable=1", uri=True)
    try:
        return con.execute("SELECT 1 FROM location WHERE username = ?", (user,)).fetchone() \
            is not None
    finally:
        con.close()


def db_outage(target, report: dict, mark, begin, end, settle: float, burst: int = 0):
    """Registrations during the outage: acknowledged (kept in shared memory and retried) or
    refused, never acknowledged and then dropped; the time, once the outage ends, until the
    one made during it is in the database. `burst` new bindings first (new rows: the
    database file and its WAL must grow)."""
    begin()
    try:
        with SipClient(target.addrs.client, 0, proxy=target.proxy) as c:
            for sub in SUBS[Ledger.SIZE:Ledger.SIZE + burst]:
                register(c, target, sub, expires=120)
            report["during"] = register(c, target, mark)
        time.sleep(settle)
        report["in database during"] = in_database(target, mark.user)
    finally:
        end()
    t0 = time.monotonic()
    if report["during"] != 200:   # refused: recovery is a registration accepted again
        back = until(lambda: register_once(target) == 200, 30, step=0.1)
    else:
        back = until(lambda: in_database(target, mark.user), 30, step=0.1)
    return None if back is None else time.monotonic() - t0


def locked(target, report: dict, settle: float):
    import sqlite3
    holder: list = []

    def lock():
        con = sqlite3.connect(target.db_path(), timeout=5.0, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        holder.append(con)

    def unlock():
        holder[0].execute("ROLLBACK")
        holder[0].close()
    return db_outage(target, report, MARKS[0], lock, unlock, settle)


def disk_full(target, report: dict, settle: float):
    filler = os.path.join(target.db_dir, "filler")

    def fill():
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 64):   # up to the last bytes
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)
    return db_outage(target, report, MARKS[1], fill, lambda: os.unlink(filler), settle,
                     burst=1500)


def read_only_restart(target, report: dict, settle: float):
    """The database's file system read-only (remounted while the proxy is down: Linux refuses
    a read-only remount under files open for writing), the proxy started on it."""
    import subprocess

    def remount(mode):
        subprocess.run(["mount", "-o", f"remount,{mode}", target.db_dir], check=True)

    def begin():
        target.stop()
        remount("ro")
        t0 = time.monotonic()
        try:
            target.start()
        except Exception as e:      # said by the tool, not hidden
            report["start"] = f"refused: {str(e).splitlines()[0][:120]}"
            remount("rw")
            target.start()
            return
        report["start"] = f"answering after {time.monotonic() - t0:.2f} s"
        until(lambda: target.rpc("core.uptime") is not None, 10)

    def end():
        if "refused" not in report["start"]:
            remount("rw")
    return db_outage(target, report, MARKS[2], begin, end, settle)


def restart(target):
    target.stop()
    t0 = time.monotonic()
    target.start()
    r = call_probe(target)
    return None if r is None else time.monotonic() - t0


FAULTS = [
    ("worker killed", lambda t, rep: kill(t, "kampx: udp receiver child=1")),
    ("timer killed", lambda t, rep: kill(t, "kampx: timer")),
    ("db writer killed", lambda t, rep: kill(t, "kampx: db writer")),
    ("ctl killed", lambda t, rep: kill_ctl(t)),
    ("worker stopped 5 s", lambda t, rep: stop_worker(t)),
    ("reload (SIGHUP)", lambda t, rep: reload(t)),
    ("database locked", None),
    ("disk full", None),              # before the table is filled: no free pages to reuse
    ("database read-only", None),
    ("location table full", location_full),
    ("proxy restarted", lambda t, rep: restart(t)),
]


def failures_between(stat_rows: list[dict], t0: float, t1: float) -> int:
    return sum(int(r["FailedCall(P)"]) for r in stat_rows if t0 <= r["_t"] <= t1)


def read_stats(path: str) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    for r in rows:
        r["_t"] = float(r["CurrentTime"].split("\t")[-1]) if "\t" in r["CurrentTime"] else 0.0
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100, help="carrier-in calls/s")
    ap.add_argument("--settle", type=float, default=8.0)
    args = ap.parse_args()
    if not sipprun.available():
        print("SIPp (sip-tester) is not installed", file=sys.stderr)
        return 2
    target = FaultTarget(proxyctl.Options(children=2))
    target.db_dir = mount_db_dir()
    target.add_subscribers([*SUBS, CALLEE, *MARKS])
    target.add_carrier(target.addrs.carrier)
    total = len(FAULTS) * (args.settle + 12) + 20
    results = []
    try:
        target.start()
        until(lambda: target.rpc("core.uptime") is not None, 10)
        with SipClient(target.addrs.phone, 0, proxy=target.proxy) as reg:
            wirekit.register(reg, target, CALLEE, expires=3600,
                             contact=f"sip:{CALLEE.user}@{target.addrs.phone}:{PHONE_PORT}")
        phone = sipprun.Sipp("uas_call.xml", (target.addrs.phone, PHONE_PORT), timeout=total + 60)
        uac = sipprun.Sipp("uac_call.xml", (target.addrs.carrier, UAC_PORT), target.proxy,
                           calls=int(args.rate * total), rate=args.rate, service=CALLEE.user,
                           timeout=total + 40)
        ledger = Ledger(target)
        ledger.start()
        time.sleep(5.0)
        for name, fault in FAULTS:
            report: dict = {}
            t0 = time.time()
            if fault is None:          # the database's faults
                if name != "database locked" and target.db_dir is None:
                    print(f"  {name}: skipped (no file system of its own: not root?)")
                    continue
                fn = {"database locked": locked, "disk full": disk_full,
                      "database read-only": read_only_restart}[name]
                rec = fn(target, report, args.settle)
            else:
                rec = fault(target, report)
            time.sleep(args.settle)
            results.append((name, t0, time.time(), rec, report))
            print(f"  {name}: recovery {rec if rec is None else round(rec, 2)} s {report or ''}",
                  flush=True)
        ledger.running = False
        ledger.join(5)
        uac.kill()
        uac.proc.wait()
        rows = read_stats(uac.stat)
        uac_result = uac.wait()
        # what was acknowledged is there (after a restart too)
        acked = sorted(ledger.acked) + [MARKS[i].user for i, (_, _, _, _, rep)
                                        in enumerate(r for r in results if "during" in r[4])
                                        if rep["during"] == 200]
        missing = [u for u in acked if not lookup(target, u)]
        after_call = call_probe(target, 10)
        after_reg = register_once(target)
        phone.kill()
        print(f"\n{'fault':<22}{'failed calls':>13}{'recovery':>10}")
        for name, t0, t1, rec, report in results:
            r = "-" if rec is None else f"{rec:.2f} s"
            print(f"{name:<22}{failures_between(rows, t0, t1):>13}{r:>10}"
                  + (f"   {report}" if report else ""))
        print(f"\ncalls: {uac_result.successful} completed, {uac_result.failed} failed in all"
              f" (the calls cut by the kill at the end not counted as faults)")
        print(f"registrations acknowledged: {len(acked)} subscribers, missing after "
              f"everything: {len(missing)} {missing[:5]}; not acknowledged: {ledger.refused}")
        print(f"after every fault: a call {'answered' if after_call is not None else 'FAILED'}, "
              f"a registration {'200' if after_reg == 200 else after_reg}")
        return 0 if not missing and after_call is not None and after_reg == 200 else 1
    finally:
        target.close()
        if target.db_dir:
            import subprocess
            subprocess.run(["umount", target.db_dir], capture_output=True)
            os.rmdir(target.db_dir)


def lookup(target, user: str) -> bool:
    try:
        return bool(target.rpc("ul.lookup", {"aor": user}).get("contacts"))
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
