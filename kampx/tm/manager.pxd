from kampx._clock cimport monotonic
from kampx._cparse cimport Message, build_reply
from kampx.acc cimport Accounting
from kampx.dialog cimport Dialogs
from kampx._shm cimport CounterRow, CounterRows, KeyIndex
from kampx.forward cimport Forwarder, reply_destination
from kampx.tm.timers cimport Timer, TimerHeap
from kampx.stats.family cimport Family

cdef class ServerTxn:
    cdef public object key, method, request, lsock, reply_dest, last_reply, to_tag
    cdef public object best_reply, best_local_reason, index_key, invite
    cdef public Timer timer_g, timer_end
    cdef public object dialog, next_targets, next_dst
    cdef public list branches
    cdef public bint is_invite, cancelled, failure_done
    cdef public int state, last_code, best_code, pending, dialog_state
    cdef public long long label, charged
    cdef public double g_interval

cdef class ClientTxn:
    cdef public ServerTxn server
    cdef public object branch, dest, lsock, data, cancel_data, ack_data, udp_fallback
    cdef public Timer timer_retx, timer_fr, cancel_timer
    cdef public bint is_invite
    cdef public int state, last_code, cancel
    cdef public double interval, cancel_interval, sent_at

cdef class TransactionManager:
    cdef public double t1, t2, t4, fr, fr_inv, fr_failover, wait, _limit_logged, index_ttl
    cdef public long long max_transactions, max_bytes, max_branches, udp_mtu, worker_id
    cdef public long long _label, acc_mask
    cdef public object overload_reply, resolver, hooks
    cdef public TimerHeap timers
    cdef public CounterRow stats
    cdef public Dialogs dialogs
    cdef public Accounting acc
    cdef public object handoff_to, server_header, report
    cdef public KeyIndex txn_index
    cdef public CounterRows load
    cdef public Forwarder fwd
    cdef public dict server, client
    cdef public str branch_prefix, tag_prefix
    cdef dict __dict__

    # the calls between the manager's own steps, C calls (cpdef: still callable, and still
    # overridable on an instance, from Python)
    cpdef bint match_request(self, Message msg) except -1
    cpdef bint match_reply(self, Message msg) except -1
    cpdef ServerTxn new_server(self, Message msg, lsock, src)
    cpdef _charge(self, long long cost)
    cpdef bint _charge_bytes(self, ServerTxn t, long long n) except -1
    cpdef _uncharge(self, ServerTxn t)
    cpdef _send_upstream(self, ServerTxn t, bytes data)
    cpdef str _tag(self, ServerTxn t)
    cpdef _send_local(self, ServerTxn t, int code, str reason, extra=*, body=*)
    cpdef _reply(self, ServerTxn t, int code, bytes data, str reason=*, to_tag=*)
    cpdef _end_after(self, ServerTxn t, double delay)
    cpdef _terminate(self, ServerTxn t)
    cpdef bint relay(self, Message msg, lsock, src, dest, send_lsock) except -1
    cpdef _start_branch(self, ClientTxn c, double fr)
    cpdef bint _send_branch(self, ClientTxn c) except -1
    cpdef _stop_branch(self, ClientTxn c)
    cpdef _drop_branch(self, ClientTxn c)
    cpdef on_reply(self, Message msg, ClientTxn c)
    cpdef _relay_reply(self, ServerTxn t, Message msg, int code, bint stateless=*)

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family ACTIVE_TRANSACTIONS, BRANCHES_CAPPED, DROP_REPLIES, FINAL_REPLIES, FWD_REPLIES
cdef Family FWD_REQUESTS, INTERNAL_ERRORS, RETRANS_ABSORBED, RPL_ABSORBED, RPL_GENERATED
cdef Family RPL_RECEIVED, RPL_RELAYED, RPL_SENT, SEND_ERRORS, TIMEOUTS, TXN_MEMORY
cdef Family TXN_REFUSED, UAC_TRANSACTIONS, UAS_TRANSACTIONS
