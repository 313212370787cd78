"""A worker process: receive, parse, route, send.

Every worker waits on the shared listen sockets (epoll, EPOLLEXCLUSIVE: one worker woken per
datagram), on its own hand-off socket (packets other workers pass it because they belong to
its transactions) and on its timers. Per datagram:

  parse -> reply?   tm matches it by branch (ours name their owner) or forwards it statelessly
        -> request? stamp the top Via (received/rport), match retransmissions, CANCEL and ACK
                    against the shared transaction index (hand-off to the owner), else run
                    the route script's request_route(msg)

A script exception answers the request with 500, is logged once per distinct error and
counted; the worker goes on.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback

from kampx import __version__, dset, sl
from kampx import stats as S
from kampx._cparse import SipParseError, parse, parse_uri
from kampx.dialog import Dialogs, Journal
from kampx.routing import api
from kampx.routing.flow import Dropped, ScriptExit
from kampx.tm.keys import branch_owner, server_key
from kampx.tm.manager import TransactionManager
from kampx.tm.timers import TimerHeap
from kampx.transport.handoff import Handoff

log = logging.getLogger("kampx.worker")

BOOT_ERROR_EXIT = 3        # "could not boot": the supervisor stops instead of respawning
RETIRE_TIMEOUT = 32.0     # how long a worker retired by a reload keeps its transactions
RECV_BATCH = 32            # datagrams read per wake-up before looking at timers again
M_ACK, M_CANCEL = 2, 4
FORBIDDEN_REPLY = (403, "Forbidden", ())


class Worker:
    """Built in the supervisor before fork; run() is the child's whole life."""

    role = "worker"

    def __init__(self, supervisor_ctx, worker_id: int, child_no: int, sockets, listen_index: int,
                 script, cfg):
        self.ctx = supervisor_ctx
        self.worker_id = worker_id
        self.child_no = child_no
        self.sockets = sockets              # all of them: any may be needed to send
        self.listen_index = listen_index    # the one this worker reads
        self.script = script
        self.cfg = cfg
        self.pid = 0
        self.booted = False
        self.retiring = False
        self.started_at = 0.0

    # ------------------------------------------------------------------ process setup --

    def title(self) -> str:
        return (f"kampx: udp receiver child={self.child_no} "
                f"sock={self.sockets[self.listen_index].name}")

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
            except Exception:
                pass
            logging.shutdown()
        os._exit(code)

    def _setup(self) -> None:
        """The child's process setup (title, signals, wake-up pipe), then its state."""
        from setproctitle import setproctitle
        setproctitle(self.title())
        self.stopping = False
        self.stop_deadline = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.stop_bound = self.cfg.core.shutdown_timeout_s
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.supervisor_pid = os.getppid()
        self.setup_state()

    def setup_state(self) -> None:
        """Everything packet processing needs: counters, tables, timers, tm, the script's
        child_init. kampx.sandbox calls this alone to run a worker inside another process."""
        ctx = self.ctx
        self.stats = S.Stats(ctx.shared.counters, self.worker_id)
        self.txn_index = ctx.shared.txn_index
        self.timers = TimerHeap()
        self.handoff = Handoff(ctx.instance, self.worker_id, on_rejected=self._handoff_rejected,
                               listen_count=len(self.sockets))
        self.server_header = f"Server: kampx ({__version__})"
        self.sl_tag_prefix = ctx.instance_tag
        tm = self.cfg.tm
        self.dialogs = Dialogs(ctx.shared.dialogs, Journal(ctx.shared.dialog_journal_w, self.stats),
                               self.cfg.dialog, (tm.fr_inv_timer_ms + 64 * tm.t1_ms) / 1000 + 10,
                               self.stats)
        self.tm = TransactionManager(self)
        self.realm = self.cfg.auth.realm.lower()
        self._myself = set()
        for ls in self.sockets:
            host = ls.addr.host.lower()
            self._myself.add((host, ls.port))
            if ls.port == 5060:
                self._myself.add((host, 0))
        self._logged_errors = set()
        self.modules = {}   # per-process state of route-script modules (auth caches ...)
        init = getattr(self.script.module, "child_init", None)
        if init is not None:
            init(self.worker_id)

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
        ep = select.epoll()
        by_fd = {}
        mine = self.sockets[self.listen_index]
        ep.register(mine.fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        by_fd[mine.fd] = mine
        hfd = self.handoff.fileno()
        ep.register(hfd, select.EPOLLIN)
        handoff_fds: set[int] = set()
        ep.register(self._wake_r, select.EPOLLIN)
        process = self.process
        rotate = self.cfg.core.children > 1
        timers = self.timers
        on_timer_error = self._timer_error
        next_check = time.monotonic() + 1.0
        reading = True
        while True:
            if self.stopping and reading:
                # stop taking new work; the others (or nobody) read the sockets now
                ep.unregister(mine.fd)
                reading = False
                self.stop_deadline = time.monotonic() + self.stop_bound
            if not reading:
                now = time.monotonic()
                if now >= self.stop_deadline:
                    return
                if self.tm.busy() == 0:
                    if self.stop_bound <= self.cfg.core.shutdown_timeout_s:
                        return
                    # retiring: also keep answering retransmissions for a while
                    self.stop_deadline = min(self.stop_deadline, now + self.tm.wait)
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
                            if item is False:          # that worker went away
                                handoff_fds.discard(fd)
                                ep.unregister(fd)
                                self.handoff.drop(fd)
                            break
                        idx, src, data = item
                        if idx < len(self.sockets):
                            try:                 # receive(), inlined: a call per packet less
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
                        continue
                    sock = ls.sock
                    got = 0
                    for _ in range(RECV_BATCH):
                        try:
                            data, src = sock.recvfrom(65535)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as e:
                            if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                                continue      # ICMP errors surfacing on the shared socket
                            raise
                        got += 1
                        try:                     # receive(), inlined
                            process(data, src[:2], ls, False)
                        except Exception as e:
                            self._internal_error(e)
                    if got and rotate and reading:
                        # to the back of the socket's exclusive wait queue: the kernel offers
                        # the next datagram to a worker that has waited longer, so even a
                        # light trunk load takes turns over every worker (docs/architecture.md)
                        ep.unregister(fd)
                        ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            timers.run(on_timer_error)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                if os.getppid() != self.supervisor_pid:
                    log.warning("supervisor gone; worker %d exits", self.worker_id)
                    return

    def _handoff_rejected(self, reason: str) -> None:
        self.stats.inc(S.HANDOFF_REJECTED.base)
        self._log_once_text("handoff", reason)

    def _timer_error(self, e: Exception) -> None:
        self.stats.inc(S.INTERNAL_ERRORS.base)
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

    def _internal_error(self, e: Exception) -> None:
        self.stats.inc(S.INTERNAL_ERRORS.base)
        self._log_once("receive", e)

    def process(self, data: bytes, src: tuple, lsock, handed_off: bool) -> None:
        try:
            msg = parse(data)
        except SipParseError as e:
            self._bad_message(data, src, lsock, e.reason)
            return
        msg.src = src
        msg.lsock = lsock
        msg.dst = None
        msg.handed_off = handed_off
        if msg.is_request:
            self._on_request(msg)
        else:
            self._on_reply(msg)

    def _bad_message(self, data: bytes, src, lsock, reason: str) -> None:
        """A datagram that does not parse: counted, answered with 400 when it is a request
        whose Via lets us address a reply (Kamailio's sanity does the same), else dropped."""
        self.stats.inc(S.BAD_MSG_HDR.base)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("bad message from %s:%d: %s", src[0], src[1], reason)
        reply = _salvage_400(data, src, reason, self.sl_tag_prefix)
        if reply is not None:
            payload, dest = reply
            if lsock.sendto(payload, dest):
                self.stats.inc(S.SL_ERR_REPLIES.base)
                self.stats.inc(S.SL_REPLIES.base + 400 - 100)

    def reply_destination(self, msg, src) -> tuple:
        """Where a reply to request `msg` goes (RFC 3261 18.2.2, RFC 3581): the source IP,
        at the source port with rport, else the sent-by port."""
        via = msg.top_via
        if via is None or via.rport is not None:
            return src
        return (src[0], via.port or 5060)

    def _stamp_via(self, msg) -> None:
        """received/rport on the top Via of a request (RFC 3261 18.2.1, RFC 3581 4)."""
        via = msg.top_via
        ip, port = msg.src
        host = via.host
        if host.startswith("["):
            host = host[1:-1]
        if via.rport is not None:
            msg.add_top_via_params(f";received={ip};rport={port}")
        elif host != ip:
            msg.add_top_via_params(f";received={ip}")

    def _on_request(self, msg) -> None:
        t0 = time.perf_counter_ns()
        stats = self.stats
        mid = msg.method_id
        stats.inc(S.RCV_REQUESTS.base + mid)
        if msg.top_via is None:
            stats.inc(S.ERR_REQUESTS.base)      # nowhere to send a reply: drop
            return
        self._stamp_via(msg)
        if not self._predispatch(msg, mid):
            return
        self.run_request_route(msg)
        stats.observe_us((time.perf_counter_ns() - t0) // 1000)

    def _predispatch(self, msg, mid: int) -> bool:
        """Match a request against existing transactions before the script sees it.
        False when it was handled here (retransmission, ACK absorbed, handed to its owner)."""
        now = time.monotonic()
        if mid == M_CANCEL:
            key = msg.invite_key = server_key(msg, "INVITE")
            msg.txn_key = server_key(msg)
            if not msg.handed_off and self.tm.lookup(key) is None:
                owner = self.txn_index.lookup(key, now)
                if owner >= 0 and owner != self.worker_id and self.handoff_to(owner, msg):
                    return False
            own = self.tm.lookup(msg.txn_key)
            if own is not None:          # a retransmitted CANCEL
                self.tm.retransmission(own, msg)
                return False
            return True
        key = msg.txn_key = server_key(msg)
        t = self.tm.lookup(key)
        if t is None and not msg.handed_off:
            owner = self.txn_index.lookup(key, now)
            if owner >= 0 and owner != self.worker_id and self.handoff_to(owner, msg):
                return False
        if t is None:
            return True
        if mid == M_ACK and 200 <= t.last_code < 300:
            return True          # an ACK for a 2xx sharing the INVITE's branch: route it
        self.tm.retransmission(t, msg)
        return False

    def handoff_to(self, owner: int, msg) -> bool:
        if self.handoff.send(owner, msg.lsock.index, msg.src, msg.buf):
            self.stats.inc(S.HANDOFFS.base)
            return True
        self.stats.inc(S.HANDOFF_FAILED.base)
        return False

    def _on_reply(self, msg) -> None:
        stats = self.stats
        code = msg.status
        stats.inc(S.RCV_REPLIES.base + code - 100)
        branch = msg.branch
        c = self.tm.client.get(branch) if branch is not None else None
        if c is not None:
            self._with_context(msg, self.tm.on_reply, msg, c)
            return
        owner = branch_owner(branch)
        if owner >= 0 and owner != self.worker_id and not msg.handed_off:
            if self.handoff_to(owner, msg):
                return
        self.forward_reply_stateless(msg)

    def forward_reply_stateless(self, msg) -> bool:
        """A reply with no transaction here: our Via removed and sent on to the next Via,
        as Kamailio's core does, but only for a 2xx to an INVITE of a dialog kampx
        established (the callee retransmits its 2xx until the ACK comes) unless
        [core] forward_stray_replies: anything else would let anyone bounce datagrams off
        the proxy to the address they write in the second Via."""
        via = msg.top_via
        if via is None or not self.is_myself(via.host, via.port):
            self.stats.inc(S.DROP_REPLIES.base)
            return False
        if not self.cfg.core.forward_stray_replies and not (
                200 <= msg.status < 300 and msg.cseq_method == "INVITE"
                and self.dialogs.known(msg.call_id, msg.from_tag)):
            self.stats.inc(S.DROP_REPLIES.base)
            return False
        try:
            vias = msg.via
            msg.remove_top_via()
        except (SipParseError, ValueError):
            self.stats.inc(S.DROP_REPLIES.base)
            return False
        if len(vias) < 2:
            self.stats.inc(S.DROP_REPLIES.base)
            return False
        nxt = vias[1]
        host = nxt.received or nxt.host
        if host.startswith("["):
            host = host[1:-1]
        port = nxt.rport if nxt.rport else (nxt.port or 5060)
        if not _is_ip(host):
            self.stats.inc(S.DROP_REPLIES.base)   # never resolve a name to answer
            return False
        dest = (host, port)
        if self.socket_for(dest).sendto(msg.serialize(), dest):
            self.stats.inc(S.FWD_REPLIES.base)
            return True
        self.stats.inc(S.SEND_ERRORS.base)
        return False

    # ------------------------------------------------------------------ routing ---------

    def is_myself(self, host: str, port: int) -> bool:
        h = host.lower()
        if h.startswith("["):
            h = h[1:-1]
        if h == self.realm:
            return True
        return (h, port) in self._myself

    def socket_for(self, dest: tuple):
        fam = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        for ls in self.sockets:
            if ls.family == fam:
                return ls
        return self.sockets[0]

    def resolve(self, host: str, port: int):
        """An (ip, port) to send to. Names are resolved here, and only here: when a route
        relays a request to one."""
        if host.startswith("["):
            host = host[1:-1]
        if not 0 <= port < 65536:
            return None          # not a port (0 = none given: 5060)
        if _is_ip(host):
            return (host, port or 5060)
        try:
            info = socket.getaddrinfo(host, port or 5060, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError, ValueError):   # not a name IDNA can encode
            return None
        return info[0][4][:2] if info else None

    def destination(self, msg, host=None, port=None):
        if host is not None:
            return self.resolve(host, int(port or 0))
        target = msg.dst or msg.ruri
        try:
            u = parse_uri(target)
        except SipParseError:
            return None
        if u.scheme not in ("sip", "sips"):
            return None
        h = u.params.get("maddr") or u.host
        return self.resolve(h, u.port)

    def relay(self, msg, host=None, port=None) -> bool:
        """t_relay() for the script."""
        mid = msg.method_id
        if host is None and port is None and mid not in (M_ACK, M_CANCEL) and dset.has_branches(msg):
            # lookup() found several bindings: fork to all of them (Kamailio's append_branches)
            return dset.fork(msg, self.relay)
        if mid == M_CANCEL:
            t = self.tm.lookup(msg.invite_key)
            if t is None:
                return False
            return self.tm.cancel(msg, t, msg.lsock, msg.src)
        if msg.has_to_tag and not self.dialogs.admit(msg):
            # in-dialog, but not in a dialog kampx established: whatever the script did,
            # the proxy is not an open relay (kampx/dialog.py)
            msg.error_reply = FORBIDDEN_REPLY
            return False
        dest = self.destination(msg, host, port)
        if dest is None:
            return False
        lsock = self.socket_for(dest)
        if mid == M_ACK:
            return self.forward_stateless(msg, dest, lsock)
        return self.tm.relay(msg, msg.lsock, msg.src, dest, lsock)

    def forward_stateless(self, msg, dest, lsock) -> bool:
        """Forward without a transaction (an ACK for a 2xx): our Via with a fresh branch."""
        branch = f"{self.tm.branch_prefix}a{os.urandom(4).hex()}.0"
        data = msg.serialize(via=lsock.via_prefix + branch.encode())
        if lsock.sendto(data, dest):
            self.stats.inc(S.FWD_REQUESTS.base)
            return True
        self.stats.inc(S.SEND_ERRORS.base)
        return False

    # ------------------------------------------------------------------ script ----------

    def run_request_route(self, msg) -> None:
        ctx = api.ctx
        ctx.worker = self
        ctx.msg = msg
        try:
            self.script.request_route(msg)
        except Dropped:
            self.stats.inc(S.DROP_REQUESTS.base)
        except ScriptExit:
            pass
        except Exception as e:
            self._script_error(msg, e)
        finally:
            ctx.msg = None

    def _with_context(self, msg, fn, *args):
        """Run tm code that may call back into the script (reply/failure/branch routes)."""
        try:
            fn(*args)
        except ScriptExit:
            pass
        except Exception as e:
            self.stats.inc(S.INTERNAL_ERRORS.base)
            self._log_once("reply", e)

    def run_reply_route(self, reply) -> bool:
        """reply_route(msg) for a reply; False when the script dropped it."""
        ctx = api.ctx
        saved = ctx.msg
        ctx.msg = reply
        try:
            self.script.reply_route(reply)
            return True
        except Dropped:
            return False
        except ScriptExit:
            return True
        except Exception as e:
            self.stats.inc(S.SCRIPT_ERRORS.base)
            self._log_once("reply_route", e)
            return True
        finally:
            ctx.msg = saved

    def run_failure_route(self, t, request) -> None:
        ctx = api.ctx
        saved = ctx.msg, ctx.txn
        ctx.msg, ctx.txn = request, t
        try:
            self.script.failure_route(request)
        except ScriptExit:
            pass
        except Exception as e:
            self.stats.inc(S.SCRIPT_ERRORS.base)
            self._log_once("failure_route", e)
        finally:
            ctx.msg, ctx.txn = saved

    def run_branch_route(self, msg) -> None:
        try:
            self.script.branch_route(msg)
        except ScriptExit:
            pass
        except Exception as e:
            self.stats.inc(S.SCRIPT_ERRORS.base)
            self._log_once("branch_route", e)

    def _script_error(self, msg, e: Exception) -> None:
        self.stats.inc(S.SCRIPT_ERRORS.base)
        self._log_once("request_route", e)
        t = msg.__dict__.get("txn")
        if t is not None:
            self.tm.reply(t, 500, "Server Internal Error")
        else:
            sl.send_reply(self, msg, 500, "Server Internal Error")

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
        log.error("%s raised %s (logged once per distinct error):\n%s", where, type(e).__name__,
                  "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


def _sent_by_port(sent_by: str) -> int | None:
    """The port of a Via sent-by ("host", "host:port", "[v6]", "[v6]:port"): 5060 when
    absent, None when it is not a port (not digits, 0, above 65535)."""
    if sent_by.startswith("["):
        _, _, rest = sent_by.partition("]")
        text = rest[1:] if rest.startswith(":") else ""
    else:
        _, _, text = sent_by.rpartition(":") if ":" in sent_by else ("", "", "")
    if not text:
        return 5060
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
        return None
    return int(text)


def _salvage_400(data: bytes, src, reason: str, tag_prefix: str):
    """A 400 for a request the parser refused, built from its raw lines (Via, From, To,
    Call-ID, CSeq copied as received), or None when it cannot be addressed: not a request,
    an ACK, no usable Via, missing headers."""
    try:
        head = data.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        first = lines[0].split(b" ")
        if len(first) < 3 or first[0].startswith(b"SIP/") or first[0] == b"ACK":
            return None
        if reason.startswith(("Bad Via", "Bad request line", "Bad start line")):
            return None      # Kamailio drops what it cannot even frame
        wanted = {b"via": None, b"v": None, b"from": None, b"f": None, b"to": None, b"t": None,
                  b"call-id": None, b"i": None, b"cseq": None}
        out = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            key = name.strip().lower()
            if not sep or key not in wanted:
                continue
            canon = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}.get(key, key)
            out.setdefault(canon, (name, value.strip()))
        if len(out) < 5:
            return None
        via = out[b"via"][1].split(b",")[0].decode("ascii")
        sent_by = via.split(None, 1)[1].split(";")[0].strip()
        if "rport" in via:
            dest = src
        else:
            port = _sent_by_port(sent_by)
            if port is None:
                return None      # an impossible port: nowhere to answer
            dest = (src[0], port)
        reason_b = reason.encode()
        tag = f"{tag_prefix}.bad".encode()
        to_name, to_val = out[b"to"]
        to_line = to_val if b";tag=" in to_val.lower() else to_val + b";tag=" + tag
        payload = b"".join([
            b"SIP/2.0 400 ", reason_b, b"\r\n",
            b"Via: ", out[b"via"][1], b";received=", src[0].encode(), b"\r\n",
            b"From: ", out[b"from"][1], b"\r\n",
            b"To: ", to_line, b"\r\n",
            b"Call-ID: ", out[b"call-id"][1], b"\r\n",
            b"CSeq: ", out[b"cseq"][1], b"\r\n",
            b"Server: kampx (", __version__.encode(), b")\r\n",
            b"Content-Length: 0\r\n\r\n"])
        return payload, dest
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
