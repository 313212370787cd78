"""Test script: a registrar that gives its users away (a REGISTER for someone who is not a
subscriber gets 404 instead of a challenge). Only the sipvicious control test uses it, to
show that svwar would notice."""
from kampx.routing import *  # noqa: F401,F403


def request_route(msg):
    if is_method("REGISTER"):
        realm = from_domain()
        if not is_subscriber(msg.to_uri, "subscriber", 1):
            sl_send_reply(404, "Not Found")
            exit()
        if not auth_check(realm, "subscriber", 1):
            www_challenge(realm, 0)
            exit()
        consume_credentials()
        save("location")
        exit()
    if is_method("OPTIONS") and is_myself():
        sl_send_reply(200, "Keepalive")
        exit()
    sl_send_reply(501, "Not Implemented")
