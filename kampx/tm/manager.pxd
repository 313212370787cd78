from kampx._cparse cimport Message

cdef class ServerTxn:
    cdef public object key, method, request, lsock, reply_dest, last_reply, to_tag
    cdef public object best_reply, best_local_reason, timer_g, timer_end, index_key, invite
    cdef public object dialog, next_targets, next_dst
    cdef public list branches
    cdef public bint is_invite, cancelled, failure_done
    cdef public int state, last_code, best_code, pending, dialog_state
    cdef public long long label, charged
    cdef public double g_interval

cdef class ClientTxn:
    cdef public ServerTxn server
    cdef public object branch, dest, lsock, data, timer_retx, timer_fr, cancel_data
    cdef public object cancel_timer, ack_data, udp_fallback
    cdef public bint is_invite
    cdef public int state, last_code, cancel
    cdef public double interval, cancel_interval, sent_at

cdef class TransactionManager:
    cdef public double t1, t2, t4, fr, fr_inv, fr_failover, wait, _limit_logged, index_ttl
    cdef public long long max_transactions, max_bytes, max_branches, udp_mtu, worker_id
    cdef public long long _label, acc_mask
    cdef public object overload_reply, stats, timers, fwd, resolver, hooks, dialogs, acc
    cdef public object handoff_to, txn_index, load, server_header, report
    cdef public dict server, client
    cdef public str branch_prefix, tag_prefix
    cdef dict __dict__
