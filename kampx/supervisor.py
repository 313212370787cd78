"""The supervisor: binds, creates the shared memory, forks and looks after the children.

Modelled on gunicorn's arbiter. Signal handlers only queue the signal and wake the loop; the
loop handles one signal at a time, reaps children, respawns dead workers (with back-off),
and stops the proxy with one line when a worker cannot boot.

  SIGTERM / SIGINT  graceful stop: children stop reading, finish in-flight transactions
                    within [core] shutdown_timeout_s, the supervisor exits 0 within 5 s
  SIGHUP            reload: config and route script are read again; new workers start and
                    boot before the old ones are retired (SIGUSR1), so no request is dropped;
                    the permissions address table and the dispatcher sets are reloaded
                    from the database
  SIGCHLD           reap
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time

from kampx import config as config_mod
from kampx import systemd
from kampx.routing import loader
from kampx.shared import MAX_WORKER_IDS, TXN_BYTES, TXN_COUNT, SharedState
from kampx.worker import BOOT_ERROR_EXIT, Worker

log = logging.getLogger("kampx.supervisor")

STOP_TIMEOUT = 4.5  # the contract: exit within 5 s of SIGTERM
DB_WRITER_LAST_S = 1.5  # the db writer's time to drain, after the others stopped
BOOT_TIMEOUT = 10.0  # a reload gives the new workers this long to boot
RESPAWN_WINDOW = 10.0  # deaths closer together than this back off


class StartupError(Exception):
    """One line for the operator; kampx run exits non-zero with it."""


class Context:
    """What a child needs from the supervisor (inherited through fork)."""

    def __init__(self, shared: SharedState, boot_w: int):
        self.shared = shared
        self.instance = shared.instance
        self.instance_tag = shared.tag_prefix
        self._boot_w = boot_w

    def notify_booted(self, worker_id: int) -> None:
        os.write(self._boot_w, bytes([worker_id]))


class Supervisor:
    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)

    def __init__(self, cfg, takeover: bool = False):
        self.cfg = cfg
        self.takeover = takeover
        self.workers: dict[int, Worker] = {}  # pid -> worker
        self.helpers: dict[int, object] = {}  # pid -> helper process object
        self.sig_queue: list[int] = []
        self.stopping = False
        self.ready_sent = False
        self.deaths: dict[tuple, list[float]] = {}
        self.respawn_at: dict[tuple, float] = {}
        self.helper_restarts: list = []  # (when, helper) waiting out a back-off
        # (old pids, deadline) during a reload
        self.retire_pending: tuple[list[int], float] | None = None
        self.started = time.time()

    # ------------------------------------------------------------------ start -------------

    def start(self) -> None:
        from setproctitle import setproctitle

        from kampx.transport.listen import bind_listen_sockets
        from kampx.transport.sockets import BindError

        setproctitle("kampx: supervisor")
        self.pid = os.getpid()
        try:
            self.script = loader.load(self.cfg.routing.script)
        except loader.ScriptError as e:
            raise StartupError(f"route script: {e}") from None
        try:
            addrs = self.cfg.core.listen_addrs()
            self.sockets = bind_listen_sockets(
                addrs,
                self.takeover,
                reply_slots=len(addrs) * self.cfg.core.children,
                tls=self.cfg.tls,
            )
        except BindError as e:
            raise StartupError(str(e)) from None
        self.shared = SharedState(self.cfg)
        from kampx import state

        try:
            state.attach(self.shared, self.cfg)
        except state.StateError as e:
            raise StartupError(str(e)) from None
        self.boot_r, self.boot_w = os.pipe()
        os.set_blocking(self.boot_r, False)
        self.ctx = Context(self.shared, self.boot_w)
        self.sig_r, self.sig_w = os.pipe()
        for fd in (self.sig_r, self.sig_w):
            os.set_blocking(fd, False)
        for sig in self.SIGNALS:
            signal.signal(sig, self._queue_signal)
        self.helper_specs = self.helper_processes()
        for spec in self.helper_specs:
            self.spawn_helper(spec)
        for slot in self.worker_slots():
            self.spawn_worker(slot)
        log.info(
            "kampx %s listening on %s, %d workers",
            _version(),
            ", ".join(ls.name for ls in self.sockets),
            len(self.workers),
        )

    def helper_processes(self) -> list:
        """The helpers the supervisor runs beside its workers (each respawned when it dies)."""
        from kampx.control.ctlproc import CtlProcess
        from kampx.dbwriter import DbWriterProcess
        from kampx.dispatcher.probe import ProberProcess
        from kampx.timer import TimerProcess

        helpers = [
            TimerProcess(self.shared, self.cfg),
            DbWriterProcess(self.shared, self.cfg),
            CtlProcess(self.shared, self.cfg, self),
        ]
        if self.cfg.dispatcher.ping_interval:
            helpers.append(ProberProcess(self.shared, self.cfg))
        return helpers

    def worker_slots(self):
        """(listen socket index, child number) for every worker the config asks for."""
        return [
            (i, n) for i in range(len(self.sockets)) for n in range(1, self.cfg.core.children + 1)
        ]

    def _queue_signal(self, signum, frame) -> None:
        if len(self.sig_queue) < 5 or signum != signal.SIGCHLD:
            self.sig_queue.append(signum)
        try:
            os.write(self.sig_w, b".")
        except OSError:
            pass

    # ------------------------------------------------------------------ the loop ----------

    def run(self) -> int:
        while True:
            self._sleep()
            self._read_boots()
            while self.sig_queue:
                sig = self.sig_queue.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    return self.stop()
                if sig == signal.SIGHUP:
                    self.reload()
                # SIGCHLD only wakes us: reaping happens below
            rc = self.reap()
            if rc is not None:
                return rc
            self._finish_reload()
            self.manage_workers()

    def _sleep(self) -> None:
        try:
            ready, _, _ = select.select([self.sig_r, self.boot_r], [], [], 1.0)
        except InterruptedError:
            return
        if self.sig_r in ready:
            try:
                while os.read(self.sig_r, 512):
                    pass
            except BlockingIOError:
                pass

    def _read_boots(self) -> None:
        try:
            data = os.read(self.boot_r, 512)
        except BlockingIOError:
            return
        for wid in data:
            for w in self.workers.values():
                if w.worker_id == wid:
                    w.booted = True
        if not self.ready_sent and self.workers and all(w.booted for w in self.workers.values()):
            self.ready_sent = True
            n = len(self.workers)
            systemd.notify(
                "READY=1",
                f"STATUS=kampx {_version()}: {n} workers on "
                + ", ".join(ls.name for ls in self.sockets),
            )
            log.info("all %d workers ready", n)

    # ------------------------------------------------------------------ children ----------

    def _alloc_worker_id(self) -> int:
        used = {w.worker_id for w in self.workers.values()}
        start = getattr(self, "_next_id", 0)
        for k in range(MAX_WORKER_IDS):
            wid = (start + k) % MAX_WORKER_IDS
            if wid not in used:
                self._next_id = wid + 1
                return wid
        raise RuntimeError("no free worker id")

    def _fork(self, child) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                for sig in self.SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (self.sig_r, self.sig_w, self.boot_r):
                    os.close(fd)
                child.run()
            finally:
                os._exit(1)
        return pid

    def spawn_worker(self, slot) -> Worker:
        wid = self._alloc_worker_id()
        w = Worker(self.ctx, wid, slot[1], self.sockets, slot[0], self.script, self.cfg)
        w.started_at = time.monotonic()
        w.pid = self._fork(w)
        self.workers[w.pid] = w
        self.steer_replies()
        self.publish_workers()
        return w

    def publish_workers(self) -> None:
        """Which worker ids take work now (shared.live_workers): a worker reading a busy
        TCP/TLS connection spreads its requests over them (transport/stream.py)."""
        live = self.shared.live_workers
        taking = {w.worker_id for w in self.workers.values() if not w.retiring}
        for wid in range(live.shape[1]):
            want = 1 if wid in taking else 0
            if live.get(0, wid) != want:
                live.add(0, wid, want - live.get(0, wid))

    def steer_replies(self) -> None:
        """Give the kernel's reply steering the live workers: each worker id to the reply
        socket of its slot (transport/steering.py). A worker being retired by a reload
        shares its slot's socket with its successor."""
        steered = [ls for ls in self.sockets if ls.reply_socks]
        if not steered:
            return
        from kampx.transport import steering

        # a reload may change [core] children: a slot the config no longer has, or one past
        # the reply sockets bound at start, is steered nowhere (its replies come through the
        # shared socket): an index outside the group would make the kernel hash datagrams
        # onto sockets nobody reads
        index = {slot: i for i, slot in enumerate(self.worker_slots())}
        bound = min(len(ls.reply_socks) for ls in steered)
        table = {}
        for w in self.workers.values():
            i = index.get(w.slot)
            if i is not None and i < bound:
                table[w.worker_id] = 1 + i
        for ls in steered:
            try:
                steering.attach(ls.sock, table)
            except OSError as e:  # the replies are handed over instead: nothing is lost
                log.warning("%s: reply steering not updated: %s", ls.name, e)

    def spawn_helper(self, spec) -> None:
        spec.started_at = time.monotonic()
        spec.pid = self._fork(spec)
        self.helpers[spec.pid] = spec

    def reap(self):
        """Collect dead children. Returns an exit code when the proxy must stop."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            code = os.waitstatus_to_exitcode(status)
            w = self.workers.pop(pid, None)
            if w is not None:
                rc = self._worker_died(w, code)
                if rc is not None:
                    return rc
                continue
            h = self.helpers.pop(pid, None)
            if h is not None and not self.stopping:
                delay = self._backoff(("helper", h.title()))
                log.warning(
                    "%s (pid %d) exited with %s; restarting it%s",
                    h.title(),
                    pid,
                    _how(code),
                    f" in {delay:.1f} s" if delay else "",
                )
                self.helper_restarts.append((time.monotonic() + delay, h))

    def _worker_died(self, w: Worker, code: int):
        self.shared.txn_index.purge_owner(w.worker_id)
        self.publish_workers()
        if self.shared.stream_aliases is not None:  # its connections died with it
            self.shared.stream_aliases.purge_owner(w.worker_id)
            self.shared.stream_load.zero_row(w.worker_id)
        self.steer_replies()  # its id no longer steers anything
        from kampx import stats as S
        from kampx.tm.stats import ACTIVE_TRANSACTIONS, TXN_MEMORY

        # gauges held in the dead row would stay up forever: give them back, and the
        # dead worker's transactions to the proxy-wide totals tm tests its limits against
        row = w.worker_id
        totals = {ACTIVE_TRANSACTIONS.base: TXN_COUNT, TXN_MEMORY.base: TXN_BYTES}
        for fam in S.families():
            if fam.kind == S.KIND_GAUGE:
                for col in range(fam.base, fam.base + fam.size):
                    v = self.shared.counters.get(row, col)
                    if v:
                        self.shared.counters.add(row, col, -v)
                        if col in totals:
                            self.shared.txn_load.add(0, totals[col], -v)
        if code == BOOT_ERROR_EXIT and not w.booted:
            log.error("a worker could not boot (see above); stopping")
            self.stop()
            return 1
        if w.retiring or self.stopping:
            return None
        log.warning("worker %d (pid %d) died (%s); respawning", w.worker_id, w.pid, _how(code))
        self.respawn_at[w.slot] = time.monotonic() + self._backoff(w.slot)
        return None

    def _backoff(self, key) -> float:
        """No delay for a first death; deaths in quick succession wait 0.5, 1, 2 ... 30 s."""
        now = time.monotonic()
        recent = [t for t in self.deaths.get(key, []) if now - t < RESPAWN_WINDOW] + [now]
        self.deaths[key] = recent
        return 0.0 if len(recent) <= 1 else min(30.0, 0.5 * 2 ** (len(recent) - 2))

    def manage_workers(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        due = [h for at, h in self.helper_restarts if at <= now]
        self.helper_restarts = [(at, h) for at, h in self.helper_restarts if at > now]
        for h in due:
            self.spawn_helper(h)
        live = {w.slot for w in self.workers.values() if not w.retiring}
        now = time.monotonic()
        for slot in self.worker_slots():
            if slot not in live and now >= self.respawn_at.get(slot, 0.0):
                self.spawn_worker(slot)

    # ------------------------------------------------------------------ reload ------------

    def reload(self) -> None:
        systemd.notify("RELOADING=1", "STATUS=reloading")
        log.info("reloading configuration and route script")
        try:
            cfg = config_mod.load(self.cfg.path) if self.cfg.path else self.cfg
            if cfg.core.listen != self.cfg.core.listen:
                log.warning(
                    "[core] listen changed: kept %s (a restart applies it)", self.cfg.core.listen
                )
                cfg = _with_listen(cfg, self.cfg.core.listen)
            script = loader.load(cfg.routing.script)
        except (config_mod.ConfigError, loader.ScriptError) as e:
            log.error("reload refused, still running the previous configuration: %s", e)
            systemd.notify("READY=1", "STATUS=reload refused")
            return
        from kampx import state

        try:
            n = state.reload(self.shared, cfg)
            log.info("address table reloaded: %d entries", n)
        except state.StateError as e:
            log.error("address table not reloaded: %s", e)
        try:
            n = state.reload_dispatcher(self.shared, cfg)
            log.info("dispatcher reloaded: %d destinations", n)
        except state.StateError as e:
            log.error("dispatcher not reloaded: %s", e)
        _set_log_level(cfg.core.log_level)
        self.cfg, self.script = cfg, script
        old = [pid for pid, w in self.workers.items() if not w.retiring]
        for pid in old:
            self.workers[pid].retiring = True
        self.publish_workers()
        for slot in self.worker_slots():
            self.spawn_worker(slot)
        self.retire_pending = (old, time.monotonic() + BOOT_TIMEOUT)

    def _finish_reload(self) -> None:
        if self.retire_pending is None:
            return
        old, deadline = self.retire_pending
        new = [w for w in self.workers.values() if not w.retiring]
        if not all(w.booted for w in new) and time.monotonic() < deadline:
            return
        for pid in old:
            _kill(pid, signal.SIGUSR1)
        self.retire_pending = None
        systemd.notify("READY=1", f"STATUS=kampx {_version()}: {len(new)} workers (reloaded)")
        log.info("reload done: %d new workers, %d retiring", len(new), len(old))

    # ------------------------------------------------------------------ stop --------------

    def stop(self) -> int:
        self.stopping = True
        systemd.notify("STOPPING=1")
        log.info("stopping")
        # the db writer goes last: what the others journal as they stop (dialogs, accounting
        # records) must still find a reader
        last = {pid for pid, h in self.helpers.items() if getattr(h, "role", "") == "db writer"}
        for pid in list(self.workers) + list(self.helpers):
            if pid not in last:
                _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while (self.workers or self.helpers) and time.monotonic() < deadline:
            if last and (
                not (self.workers.keys() | self.helpers.keys()) - last
                or time.monotonic() >= deadline - DB_WRITER_LAST_S
            ):
                for pid in last:
                    _kill(pid, signal.SIGTERM)
                last = set()
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.02)
                continue
            self.workers.pop(pid, None)
            self.helpers.pop(pid, None)
        for pid in list(self.workers) + list(self.helpers):
            log.warning("pid %d did not stop in time; killed", pid)
            _kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for ls in self.sockets:
            ls.close()
        return 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def _version() -> str:
    from kampx import __version__

    return __version__


def _with_listen(cfg, listen):
    import dataclasses

    return dataclasses.replace(cfg, core=dataclasses.replace(cfg.core, listen=listen))


def _set_log_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
