"""SIP methods by name: the ids the parser gives Message.method_id (kampx._cparse), so code
reads `msg.method_id == M.ACK` instead of a number."""

from kampx._cparse import METHOD_IDS as _IDS

OTHER = 0
INVITE = _IDS["INVITE"]
ACK = _IDS["ACK"]
BYE = _IDS["BYE"]
CANCEL = _IDS["CANCEL"]
REGISTER = _IDS["REGISTER"]
OPTIONS = _IDS["OPTIONS"]
INFO = _IDS["INFO"]
UPDATE = _IDS["UPDATE"]
PRACK = _IDS["PRACK"]
SUBSCRIBE = _IDS["SUBSCRIBE"]
NOTIFY = _IDS["NOTIFY"]
MESSAGE = _IDS["MESSAGE"]
REFER = _IDS["REFER"]
PUBLISH = _IDS["PUBLISH"]
