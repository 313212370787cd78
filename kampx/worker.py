"""A worker process: the receive loop and the dispatch of each datagram.

Every worker waits on the shared listen sockets (epoll, EPOLLEXCLUSIVE: one worker woken per
datagram), on its own hand-off socket (packets other workers pass it because they belong to
its transactions) and on its timers. Per datagram:

  parse -+- error ---> counted; a 400 when the request can still be addressed (sl)
        +- reply ---> tm.match_reply (its transaction here, or handed to the worker its
        |             branch names), else forward.stray_reply
        +- request -> stamp the top Via (received/rport); tm.match_request (retransmission,
                      CANCEL, ACK, or handed to the owner), else the route script's
                      request_route(msg), where t_relay() is tm.t_relay

The modules each have one job: forward (destinations, sending without a transaction), tm
(transactions), dialog (dialogs kampx established), dset (branches), routing.hooks (running
the script). The worker builds them after fork and gives each what it needs.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import select
import signal
import socket
import traceback
from typing import Any

from kampx import __version__, sl
from kampx import stats as S
from kampx._clock import monotonic, monotonic_ns, time
from kampx._cparse import BadFraming, SipParseError, parse
from kampx.dialog import Dialogs
from kampx.dns.resolver import Resolver
from kampx.dns.rfc3263 import AAAA
from kampx.dns.rfc3263 import A as A_RECORD
from kampx.forward import Forwarder
from kampx.hep import HepExporter
from kampx.methods import ACK
from kampx.overload import OverloadControl
from kampx.routing.context import ctx as script_ctx
from kampx.routing.hooks import Hooks
from kampx.sl import SL_ERR_REPLIES, SL_REPLIES
from kampx.stats.core import (
    BAD_MSG_HDR,
    ERR_REQUESTS,
    HANDOFF_FAILED,
    HANDOFF_REJECTED,
    HANDOFFS,
    INTERNAL_ERRORS,
    RCV_REPLIES,
    RCV_REQUESTS,
    SEND_ERRORS,
    STEERED,
)
from kampx.tm.manager import TransactionManager
from kampx.tm.timers import TimerHeap
from kampx.trace import Tracer
from kampx.transport._recv import Receiver
from kampx.transport.handoff import Handoff
from kampx.transport.stream import SEND_FLAG, SPREAD_FLAG, Streams

log = logging.getLogger("kampx.worker")

BOOT_ERROR_EXIT = 3  # "could not boot": the supervisor stops instead of respawning
RETIRE_TIMEOUT = 32.0  # how long a worker retired by a reload keeps its transactions
RECV_BATCH = 32  # datagrams read per wake-up before looking at timers again
GC_YOUNG = 20000  # allocations between two young-generation collections (Python's: 700)
ICMP_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
ROTATE_EVERY_S = 0.002  # a worker moves to the back of the socket's wait queue at most this often


class Worker:
    """Built in the supervisor before fork; run() is the child's whole life."""

    role = "worker"

    def __init__(
        self, supervisor_ctx, worker_id: int, child_no: int, sockets, listen_index: int, script, cfg
    ):
        self.ctx = supervisor_ctx
        self.worker_id = worker_id
        self.child_no = child_no
        self.sockets = sockets  # all of them: any may be needed to send
        self.listen_index = listen_index  # the one this worker reads
        self.slot = (listen_index, child_no)  # the supervisor's key: respawns take the same
        self.script = script
        self.cfg = cfg
        self.pid = 0
        self.booted = False
        self.retiring = False
        self.started_at = 0.0

    # ------------------------------------------------------------------ process setup --

    def title(self) -> str:
        ls = self.sockets[self.listen_index]
        return f"kampx: {ls.proto} receiver child={self.child_no} sock={ls.name}"

    def run(self) -> None:
        """The child process. Never returns."""
        code = 0
        try:
            self._setup()
        except Exception as e:
            log.error("worker %d cannot boot: %s", self.worker_id, e)
            os._exit(BOOT_ERROR_EXIT)
        try:
            self.ctx.notify_booted(self.worker_id)
            self._loop()
        except Exception:
            log.exception("worker %d crashed", self.worker_id)
            code = 1
        finally:
            try:
                self.tm.clear()
                for ls in self.sockets:
                    if not ls.reliable and ls.pending:
                        ls.flush()
                if self.streams is not None:
                    self.streams.close_all()
                self.dialogs.journal.drain(1.0)  # accounting records are not to be lost
                if self.hep is not None:
                    self.hep.flush()
            except Exception:
                pass
            logging.shutdown()
        os._exit(code)

    def _setup(self) -> None:
        """The child's process setup (title, signals, wake-up pipe), then its state."""
        from setproctitle import setproctitle

        setproctitle(self.title())
        self.stopping = False
        self.stop_deadline = 0.0  # set when the loop stops reading
        self.ep = select.epoll()
        self._io: dict[int, Any] = {}  # fd -> callback: what watch() added (DNS queries)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.stop_bound = self.cfg.core.shutdown_timeout_s
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.supervisor_pid = os.getppid()
        self.setup_state()
        # what boot built lives as long as the worker: out of the collector's sight. The
        # packet path frees its objects by reference counting; a collection every
        # GC_YOUNG allocations instead of 700 costs a third as much per call.
        gc.freeze()
        gc.set_threshold(GC_YOUNG, 20, 100)

    def setup_state(self) -> None:
        """Everything packet processing needs: counters, tables, timers, the modules, the
        script's child_init. kampx.sandbox calls this alone to run a worker inside another
        process."""
        ctx, cfg = self.ctx, self.cfg
        shared = ctx.shared
        self.stats = S.Stats(shared.counters, self.worker_id)
        self.txn_index = shared.txn_index
        self.timers = TimerHeap()
        self.handoff = Handoff(
            ctx.instance,
            self.worker_id,
            on_rejected=self._handoff_rejected,
            listen_count=len(self.sockets),
        )
        self.server_header = f"Server: kampx ({__version__})"
        self.sl_tag_prefix = ctx.instance_tag
        self.sl_ack_prefix = sl.own_tag_start(self.sl_tag_prefix)
        self._logged_errors: set[tuple] = set()  # the keys of _log_once and _log_once_text
        self.dialogs = Dialogs.of(shared, cfg, self.stats)
        self.forwarder = Forwarder(
            self.sockets, cfg.auth.realm, self.stats, self.dialogs, cfg.core.forward_stray_replies
        )
        self.resolver = self.make_resolver()
        self.hep = None
        if cfg.hep.collector:  # every datagram read and sent, to the Homer collector
            self.hep = HepExporter(cfg.hep, self.stats)
        self.tracer = Tracer(
            shared.trace_spec,
            ctx.instance,
            self.worker_id,
            self.stats,
            self.script.module,
            HANDOFFS.base,
        )
        self.streams = None
        if shared.stream_aliases is not None:  # TCP/TLS: this worker's connections
            self.streams = Streams(
                self.worker_id,
                cfg,
                shared,
                self.handoff,
                self.stats,
                self.ep,
                self._deliver_stream,
                self._unreachable,
                self.sl_tag_prefix,
            )
            for ls in self.sockets:
                if ls.reliable:
                    ls.conns = self.streams
        self.pipeline()
        self.hooks = Hooks(self.script, self, self.stats, self._log_once)
        self.overload = OverloadControl(cfg.overload, self)
        self.tm = TransactionManager(
            cfg,
            worker_id=self.worker_id,
            stats=self.stats,
            timers=self.timers,
            forwarder=self.forwarder,
            resolver=self.resolver,
            hooks=self.hooks,
            dialogs=self.dialogs,
            handoff_to=self.handoff_to,
            txn_index=self.txn_index,
            load=shared.txn_load,
            tag_prefix=self.sl_tag_prefix,
            server_header=self.server_header,
            report=self._log_once,
        )
        # per-process state of route-script modules (auth caches ...)
        self.modules: dict[str, Any] = {}
        script_ctx.worker = self
        init = getattr(self.script.module, "child_init", None)
        if init is not None:
            init(self.worker_id)

    def make_resolver(self) -> Resolver:
        """RFC 3263 for relays to names, its queries on this worker's loop; AAAA records
        only when the proxy has an IPv6 socket to send from, TCP and TLS targets only when
        it listens on them."""
        v6 = any(ls.family == socket.AF_INET6 for ls in self.sockets)
        # NAPTR/SRV may name the transports the proxy can send over (UDP first)
        protos = {ls.proto for ls in self.sockets}
        supported = tuple(t for t in ("udp", "tcp", "tls") if t in protos) or ("udp",)
        return Resolver(
            self.cfg.dns,
            self.ctx.shared.dns_cache,
            self.stats,
            self.timers,
            self.watch,
            self.unwatch,
            families=(A_RECORD, AAAA) if v6 else (A_RECORD,),
            supported=supported,
        )

    def watch(self, fd: int, callback) -> None:
        """Call `callback()` from the loop whenever fd is readable."""
        self._io[fd] = callback
        self.ep.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        if self._io.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def _on_stop_signal(self, signum, frame) -> None:
        # only note it; the loop does the work. SIGUSR1 retires a worker after a reload:
        # it stops reading but keeps its ringing calls' transactions longer than a stop does.
        if signum == signal.SIGUSR1 and not self.stopping:
            self.stop_bound = RETIRE_TIMEOUT
        else:
            self.stop_bound = min(self.stop_bound, self.cfg.core.shutdown_timeout_s)
        self.stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ the loop --------

    def _loop(self) -> None:
        ep = self.ep
        io = self._io
        by_fd = {}
        mine = self.sockets[self.listen_index]
        ep.register(mine.fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        streams = self.streams
        accept_fd = -1  # a tcp:/tls: listen socket: connections to accept
        receivers = {}
        if mine.reliable:
            accept_fd = mine.fd
        else:
            by_fd[mine.fd] = mine
            # the shared socket's datagrams carry their arrival time: overload control's signal
            receivers[mine.fd] = Receiver(mine.fd, RECV_BATCH, True)
        # the replies the kernel steers to this worker's slot, on every listen address
        # (a branch may leave from any of them): read until the very end, a stop included
        listen_index, child_no = self.slot
        slot_index = listen_index * self.cfg.core.children + child_no - 1
        for ls in self.sockets:
            if slot_index < len(ls.reply_socks):
                rfd = ls.reply_socks[slot_index].fileno()
                ep.register(rfd, select.EPOLLIN)
                by_fd[rfd] = ls
                receivers[rfd] = Receiver(rfd, RECV_BATCH)
        shared_fd = mine.fd
        hfd = self.handoff.fileno()
        ep.register(hfd, select.EPOLLIN)
        handoff_fds: set[int] = set()
        ep.register(self._wake_r, select.EPOLLIN)
        process = self.pipeline()
        tracer = self.tracer
        # a trace starting, changing or ending moves one shared word: read it each round
        trace_words, trace_word = tracer.watch()
        trace_seen, tracing = tracer.seen, tracer.active
        datagram_socks = [ls for ls in self.sockets if not ls.reliable]
        for ls in datagram_socks:
            ls.pending = []  # sends wait for the end of the round (flushed above)
        rotate = self.cfg.core.children > 1
        timers = self.timers
        overload = self.overload
        journal = self.dialogs.journal
        hep = self.hep
        on_timer_error = self._timer_error
        rotated = 0.0
        next_check = monotonic() + 1.0
        reading = True
        while True:
            if self.stopping and reading:
                # stop taking new work; the others (or nobody) read the sockets now
                ep.unregister(mine.fd)
                reading = False
                self.stop_deadline = monotonic() + self.stop_bound
            if not reading:
                now = monotonic()
                if now >= self.stop_deadline:
                    return
                if self.tm.busy() == 0:
                    if self.stop_bound <= self.cfg.core.shutdown_timeout_s:
                        return
                    # retiring: also keep answering retransmissions for a while
                    self.stop_deadline = min(self.stop_deadline, now + self.tm.wait)
            journal.flush()  # this round's dialog records: one write
            for ls in datagram_socks:  # this round's datagrams: one sendmmsg per socket
                if ls.pending:
                    failed = ls.flush()
                    if failed:
                        self.stats.add(SEND_ERRORS.base, failed)
            if streams is not None and streams.dirty:
                streams.flush()  # this round's messages on each connection: one send each
            if hep is not None:
                hep.flush()  # this round's HEP copies: one sendmmsg
            if trace_words[trace_word] != trace_seen:  # what a trace costs untraced
                process = self.pipeline()
                trace_seen, tracing = tracer.seen, tracer.active
            elif tracing:
                tracer.flush()
            try:
                events = ep.poll(timers.timeout(0.5))
            except InterruptedError:
                continue
            for fd, _ev in events:
                if fd == hfd:
                    for cfd in self.handoff.accept():
                        ep.register(cfd, select.EPOLLIN)
                        handoff_fds.add(cfd)
                elif fd in handoff_fds:
                    for _ in range(RECV_BATCH):
                        item = self.handoff.recv(fd)
                        if not item:
                            if item is False:  # that worker went away
                                handoff_fds.discard(fd)
                                ep.unregister(fd)
                                self.handoff.drop(fd)
                            break
                        idx, src, data = item
                        if idx & SEND_FLAG:  # a message to write on our connection
                            ls = self.sockets[idx & 0x3F]
                            if streams is not None and ls.reliable:
                                streams.send(ls, data, src, handed=True)
                        elif idx & SPREAD_FLAG:  # a busy connection's request: as if read here
                            try:
                                process(data, src, self.sockets[idx & 0x3F], False)
                            except Exception as e:
                                self._internal_error(e)
                        elif idx < len(self.sockets):
                            try:  # receive(), inlined: a call per packet less
                                process(data, src, self.sockets[idx], True)
                            except Exception as e:
                                self._internal_error(e)
                elif fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 64)
                    except OSError:
                        pass
                else:
                    ls = by_fd.get(fd)
                    if ls is None:
                        if streams is not None and fd in streams.fds:
                            try:
                                streams.on_event(fd, _ev)
                            except Exception as e:
                                self._internal_error(e)
                            continue
                        if fd == accept_fd and streams is not None:
                            if streams.accept(mine) and rotate and reading:
                                # to the back of the wait queue: connections spread
                                ep.unregister(fd)
                                ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
                            continue
                        handler = io.get(fd)
                        if handler is not None:
                            try:
                                handler()
                            except Exception as e:
                                self._internal_error(e)
                        continue
                    try:
                        got = receivers[fd].recv()  # all it holds (up to RECV_BATCH), one call
                    except OSError as e:
                        if e.errno in ICMP_ERRORS:
                            continue  # an ICMP error surfacing on the shared socket
                        raise
                    if fd == shared_fd:
                        if got:
                            overload.observe(receivers[fd].delay)
                    elif got:
                        self.stats.add(STEERED.base, len(got))
                    for data, src in got:
                        try:  # receive(), inlined
                            process(data, src, ls, False)
                        except Exception as e:
                            self._internal_error(e)
                    if got and rotate and reading and fd == shared_fd:
                        # to the back of the socket's exclusive wait queue: the kernel offers
                        # the next datagram to a worker that has waited longer, so even a
                        # light trunk load takes turns over every worker (docs/architecture.md).
                        # At most every ROTATE_EVERY_S: under load the kernel already passes
                        # over busy workers, and the two system calls are not free.
                        now = monotonic()
                        if now - rotated >= ROTATE_EVERY_S:
                            rotated = now
                            ep.unregister(fd)
                            ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            timers.run(on_timer_error)
            now = monotonic()
            if now >= next_check:
                next_check = now + 1.0
                overload.tick(now)
                if streams is not None:
                    streams.sweep(now)
                if tracer.expired(time()):  # a trace ends by itself, ctl or not
                    tracer.stop()
                    process = self.pipeline()
                    trace_seen, tracing = tracer.seen, tracer.active
                if os.getppid() != self.supervisor_pid:
                    log.warning("supervisor gone; worker %d exits", self.worker_id)
                    return

    def pipeline(self):
        """process() with the taps of whatever watches the traffic now (HEP export, a live
        trace), and every socket's send tap to match. Called at boot and whenever a trace
        starts or ends."""
        process = self.process
        tracer = self.tracer
        if tracer.changed():
            tracer.refresh()
        taps = []
        if tracer.active:
            process = tracer.wrap(process)
            taps.append(tracer.sent)
        if self.hep is not None:
            process = self._tapped(process, self.hep.received)
            taps.append(self.hep.sent)
        tap = taps[0] if len(taps) == 1 else _each(taps) if taps else None
        for ls in self.sockets:
            ls.tap = tap
        self.current_process = process
        return process

    @staticmethod
    def _tapped(process, tap):
        """process() that first shows each datagram read here to `tap` (a handed-off one
        was shown by the worker that read it)."""

        def tapped(data, src, lsock, handed_off):
            if not handed_off:
                tap(data, src, lsock)
            process(data, src, lsock, handed_off)

        return tapped

    def _handoff_rejected(self, reason: str) -> None:
        self.stats.inc(HANDOFF_REJECTED.base)
        self._log_once_text("handoff", reason)

    def _timer_error(self, e: Exception) -> None:
        self.stats.inc(INTERNAL_ERRORS.base)
        self._log_once("timer", e)

    # ------------------------------------------------------------------ receive ---------

    def receive(self, data: bytes, src: tuple, lsock, handed_off: bool) -> None:
        """Process one datagram. Nothing a datagram contains may end the worker: an
        unexpected exception is counted (core.internal_errors), logged once per distinct
        error, and the worker goes on with the next datagram. (The fuzz target
        tools/fuzz_receive.py drives the path below this guard and fails on any exception.)
        The loop inlines this guard around process() for the datagrams it reads."""
        try:
            self.process(data, src, lsock, handed_off)
        except Exception as e:
            self._internal_error(e)

    def _deliver_stream(self, data: bytes, src: tuple, lsock) -> None:
        """A message framed on one of this worker's connections (transport/stream.py)."""
        try:
            self.current_process(data, src, lsock, False)
        except Exception as e:
            self._internal_error(e)

    def _unreachable(self, lsock, dest: tuple) -> None:
        """A connection this worker opened failed before carrying anything."""
        self.tm.unreachable(lsock, dest)

    def _internal_error(self, e: Exception) -> None:
        self.stats.inc(INTERNAL_ERRORS.base)
        self._log_once("receive", e)

    def process(self, data: bytes, src: tuple, lsock, handed_off: bool) -> None:
        try:
            msg = parse(data)
        except SipParseError as e:
            self._bad_message(data, src, lsock, e)
            return
        msg.src = src
        msg.lsock = lsock
        msg.handed_off = handed_off
        if msg.is_request:
            self._on_request(msg)
        else:
            self._on_reply(msg)

    def _bad_message(self, data: bytes, src, lsock, e: SipParseError) -> None:
        """A datagram that does not parse: counted, answered with 400 when it is a request
        whose Via lets us address a reply (Kamailio's sanity does the same), else dropped
        (what cannot even be framed, as Kamailio drops it)."""
        self.stats.inc(BAD_MSG_HDR.base)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("bad message from %s:%d: %s", src[0], src[1], e.reason)
        if isinstance(e, BadFraming):
            return
        reply = sl.salvage_400(data, src, e.reason, self.sl_tag_prefix)
        if reply is not None:
            payload, dest = reply
            if lsock.sendto(payload, src if lsock.reliable else dest):  # streams: its connection
                self.stats.inc(SL_ERR_REPLIES.base)
                self.stats.inc(SL_REPLIES.base + 400 - 100)

    def _on_request(self, msg) -> None:
        t0 = monotonic_ns()
        stats = self.stats
        if not msg.handed_off:  # counted once, by the worker that read it
            stats.inc(RCV_REQUESTS.base + msg.method_id)
        if not msg.has_via:
            stats.inc(ERR_REQUESTS.base)  # nowhere to send a reply: drop
            return
        msg._stamp_source()  # received/rport (RFC 3261 18.2.1, RFC 3581 4)
        if self.tm.match_request(msg):
            if msg.method_id == ACK and self._acks_own_reply(msg):
                pass  # Kamailio's sl ACK filter: the ACK of a reply this proxy made ends here
            elif not (self.overload.behind and self.overload.refuse(msg)):
                self.hooks.request_route(msg)
        stats.observe_us((monotonic_ns() - t0) // 1000)

    def _acks_own_reply(self, msg) -> bool:
        """An ACK (no transaction of ours) for a reply this proxy sent statelessly: its
        To-tag is one sl made (sl.own_tag_start). The script would only drop it, at a script
        run's cost, which matters most when every refused call under overload brings one."""
        tag = msg._to_tag()
        return tag is not None and tag.startswith(self.sl_ack_prefix)

    def _on_reply(self, msg) -> None:
        if not msg.handed_off:  # counted once, by the worker that read it
            self.stats.inc(RCV_REPLIES.base + msg.status - 100)
        if not self.tm.match_reply(msg):
            self.forwarder.stray_reply(msg)

    def handoff_to(self, owner: int, msg) -> bool:
        if self.handoff.send(owner, msg.lsock.index, msg.src, msg.buf):
            self.stats.inc(HANDOFFS.base)
            return True
        self.stats.inc(HANDOFF_FAILED.base)
        return False

    # ------------------------------------------------------------------ errors ----------

    def _log_once_text(self, where: str, text: str) -> None:
        """A warning logged once per distinct (where, text): a flood of the same bad input
        costs one line."""
        key = (where, text)
        if key in self._logged_errors:
            return
        self._logged_errors.add(key)
        log.warning("%s: %s (logged once)", where, text)

    def _log_once(self, where: str, e: Exception) -> None:
        tb = traceback.extract_tb(e.__traceback__)
        last = tb[-1] if tb else None
        key = (where, type(e).__name__, last.filename if last else "", last.lineno if last else 0)
        if key in self._logged_errors:
            return
        self._logged_errors.add(key)
        log.error(
            "%s raised %s (logged once per distinct error):\n%s",
            where,
            type(e).__name__,
            "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip(),
        )


def _each(taps):
    def tap(data, dest, lsock):
        for t in taps:
            t(data, dest, lsock)

    return tap
