"""The parser's C view: the header ids, the position records and the Message type, for
the modules that cimport them (a compiled module that knows a value is a Message reads its
fields as C fields instead of through attribute lookups). The definitions are in _cparse.pyx."""

from libc.stdint cimport int16_t, int32_t

cdef enum:
    H_OTHER = 0
    H_VIA
    H_FROM
    H_TO
    H_CALL_ID
    H_CSEQ
    H_CONTACT
    H_MAX_FORWARDS
    H_ROUTE
    H_RECORD_ROUTE
    H_CONTENT_LENGTH
    H_CONTENT_TYPE
    H_EXPIRES
    H_AUTHORIZATION
    H_PROXY_AUTHORIZATION
    H_WWW_AUTHENTICATE
    H_PROXY_AUTHENTICATE
    H_USER_AGENT
    H_SERVER
    H_SUPPORTED
    H_REQUIRE
    H_PROXY_REQUIRE
    H_UNSUPPORTED
    H_PATH
    H_EVENT
    H_SUBJECT
    H_ALLOW
    H_ALLOW_EVENTS
    H_CONTENT_ENCODING
    H_REFER_TO
    H_REFERRED_BY
    H_SESSION_EXPIRES
    H_ACCEPT
    H_ACCEPT_CONTACT
    H_REJECT_CONTACT
    H_REQUEST_DISPOSITION
    H_IDENTITY
    H_IDENTITY_INFO
    H_MIN_EXPIRES
    H_DATE
    H_REASON
    H_COUNT

cdef struct UriPos:
    Py_ssize_t scheme_s, scheme_e
    Py_ssize_t user_s, user_e        # -1 when no userinfo
    Py_ssize_t pass_s, pass_e        # -1 when no password
    Py_ssize_t host_s, host_e        # IPv6 including brackets
    int port                          # 0 when absent
    Py_ssize_t params_s, params_e     # after the first ';' (exclusive of it); s == e when none
    Py_ssize_t headers_s, headers_e   # after '?'
    int kind                          # 1 sip, 2 sips, 3 tel, 0 other absoluteURI

cdef struct AddrPos:
    Py_ssize_t s, e                 # the whole value
    Py_ssize_t disp_s, disp_e       # display name (quotes kept), s == e when none
    Py_ssize_t uri_s, uri_e
    Py_ssize_t params_s, params_e   # header params after the URI (after the first ';')
    Py_ssize_t tag_s, tag_e         # -1 when no tag
    bint brackets

cdef struct AddrCursor:
    int k                             # the header line (index into hdrs); -1: not started
    Py_ssize_t i                      # where the next value starts on it

cdef struct ViaPos:
    Py_ssize_t s, e                  # whole via-parm
    Py_ssize_t ver_s, ver_e          # protocol version ("2.0")
    Py_ssize_t tr_s, tr_e            # transport
    Py_ssize_t host_s, host_e
    int port
    Py_ssize_t params_s, params_e
    Py_ssize_t branch_s, branch_e    # -1 when absent
    Py_ssize_t received_s, received_e
    Py_ssize_t rport_s, rport_e      # rport_s -1 absent; rport_s == rport_e: flag without value
    int rport                         # the value when there is one
    Py_ssize_t rport_p                # the ';' that starts the rport parameter
    Py_ssize_t maddr_s, maddr_e
    int has_rport

cdef struct Hdr:
    int32_t name_s, name_e
    int32_t val_s, val_e      # trimmed value; may contain folding
    int32_t line_s, line_e    # the whole header including its line end(s)
    int16_t hid
    int16_t folded


# A parsed URI's view (a relayed request's destination reads its fields as C fields).
cdef class URI:
    cdef readonly str raw, scheme, host, headers
    cdef readonly object user, password
    cdef readonly int port
    cdef readonly str params_raw
    cdef dict _params
    cdef _fill(self, const unsigned char *p, UriPos *u)


cdef class Message:
    # the datagram and its frame
    cdef readonly bytes buf
    cdef const unsigned char *p
    cdef Py_ssize_t end            # end of the framed message (body end)
    cdef Py_ssize_t hdr_s          # first header line
    cdef Py_ssize_t body_s
    # start line
    cdef readonly bint is_request
    cdef readonly int method_id
    cdef Py_ssize_t m_s, m_e, ruri_s, ruri_e, ver_s, ver_e, reason_s, reason_e
    cdef Py_ssize_t sl_e             # end of the start line's text (before its CR LF)
    cdef bint sl_loose               # request line with runs of SP/HT: rewritten when edited
    cdef readonly int status
    # headers
    cdef Hdr *hdrs
    cdef int nhdr, cap
    cdef bint no_blank               # the datagram ended before the empty line
    cdef int first[H_COUNT]
    cdef int counts[H_COUNT]
    # eager parse results
    cdef ViaPos topvia
    cdef object _top_via            # the Via view of topvia, built on first use
    cdef object _uri                # the Request-URI's URI view, built on first use
    cdef object _from_na, _to_na    # the From and To views, built on first use
    cdef AddrPos from_a, to_a
    cdef Py_ssize_t cseq_num_s, cseq_num_e, cseq_m_s, cseq_m_e
    cdef unsigned long long cseq_num
    cdef readonly int max_forwards_value   # -1 absent, -2 not a number
    cdef long long clen                     # -1 absent
    cdef readonly int contact_star
    cdef UriPos ruri_pos
    # edits
    cdef list lumps                  # [(start, end, bytes, kind) or None when cancelled]
    cdef dict added                  # header key -> [index in lumps] of lines edits added
    cdef int removed_via, removed_route   # values taken off the top by remove_top_*()
    cdef bytes new_ruri
    cdef bytes via_extra             # params appended to the top Via (received/rport)
    cdef list stamp_relay, stamp_reply  # via_extra's edits for serialize / a reply, made once
    cdef bytes stamp_received        # ";received=<ip>" when stamp_source made via_extra
    cdef bytes stamp_rport           # ";rport=<port>" then too (None: the Via has no rport)
    cdef readonly bint edited
    cdef readonly bint has_to_tag    # the To header has a tag (an in-dialog request): set by parse
    # what the proxy attaches while it processes the message (declared: a slot each, typed
    # in _cparse.pyi; the transport sets src/lsock/handed_off, the modules the rest)
    cdef public object src           # (ip, port) it came from
    cdef public object lsock         # the listen socket it arrived on
    cdef public bint handed_off      # passed over by the worker that read it
    cdef public object dst           # $du: send here instead of the Request-URI (a URI)
    cdef public bytes txn_key        # its server transaction's key (tm)
    cdef public bytes invite_key     # a CANCEL's: the key of the INVITE it cancels
    cdef public object txn           # its server transaction, once tm made one
    cdef public list branches        # the destination set's appended branches (dset)
    cdef public bint path_route      # a branch's Path went into the Route header (dset)
    cdef public bint rr_added        # record_route() added ours (rr)
    cdef readonly bytes rr_line      # ours, as serialize() writes it unless told otherwise
    cdef public bint dialog_admitted # an in-dialog request of a known dialog (dialog)
    cdef public object auth_outcome  # what auth_check() found (auth)
    cdef public object peer_tag      # the tag of the address row allow_*() matched
    cdef public object error_reply   # (code, reason, headers) for sl_reply_error()
    cdef public object on_failure    # t_on_failure(): the failure route armed (tm)
    cdef public object fr_timers     # t_set_fr(): (fr_inv, fr) seconds, 0 = default (tm)
    cdef public object ds_next       # dispatcher: what ds_next_dst() moves on to
    cdef public int flags            # setflag()/isflagset(): the message flags (acc)
    cdef public bint dlg_manage      # dlg_manage(): its dialog is tracked (dialog)
    cdef public object dlg_direction # an in-dialog request of a tracked call: its direction
    cdef public object acc_party_values  # acc's party columns, with what they were read from
    # anything a route script attaches of its own
    cdef dict __dict__

    cdef str _value(self, int k)
    cdef int _id_for(self, str name) except -2
    cdef bint _name_eq(self, int k, bytes lname)
    cdef list _indexes(self, str name)
    cdef bint _next_addr(self, int hid, AddrCursor *c, AddrPos *a) except -1
    cdef list _addr_list(self, int hid)
    cdef int _lump(self, Py_ssize_t s, Py_ssize_t e, bytes data, int kind) except -1
    cdef object _key(self, str name)
    cdef _track(self, key, int idx)
    cdef int _cancel_added(self, key) except -1
    cdef Py_ssize_t _headers_end(self)
    cdef _set(self, str name, bytes v, bint at_top)
    cdef _remove_first_value(self, int hid)
    # the twins of def methods for compiled callers that type the message: a C call, no
    # method lookup (Message has an instance dict, so a cpdef method would look for an
    # override in it on every call)
    cdef str _header(self, str name)
    cdef bytes _dialog_key(self, bint callee=*)
    cdef _stamp_source(self)
    cdef tuple _acc_parties(self)
    cdef tuple _route_hops(self, int n)
    cdef bytes _serialize(self, via=*, rr=*)
    cdef _remove_top_route(self)
    cdef _remove_top_via(self)
    cdef str _sl_tag(self, str prefix)
    cdef tuple _ruri_host_port(self)
    cdef _ruri_user(self)
    # properties' twins (str or None)
    cdef _call_id(self)
    cdef _from_tag(self)
    cdef _to_tag(self)
    cdef _branch(self)
    cdef _reason(self)
    cdef _cseq_method(self)
    cdef bytes _close_headers(self, list edits, Py_ssize_t derived)
    cdef list _stamp_edits(self, bint relay)
    cdef bytes _via_with_source_stamp(self, Hdr *h)


cpdef bytes build_reply(Message req, int code, reason, to_tag=*, extra=*, body=*)
cpdef tuple ruri_hop(Message m)
cpdef object first_contact_uri(Message m)
cpdef list record_route_values(Message m)
