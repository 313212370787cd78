"""Test script: a registrar whose challenge offers qop=auth (www_challenge flags 1), so
clients answer with nonce-counts."""
from kampx.routing import *  # noqa: F401,F403


def request_route(msg):
    if is_scanner() or auth_banned() or not pike_check_req():
        drop()
    if is_method("REGISTER"):
        realm = from_domain()
        if not auth_check(realm, "subscriber", 1):
            www_challenge(realm, 1)
            exit()
        consume_credentials()
        save("location")
        exit()
    if is_method("OPTIONS") and is_myself():
        sl_send_reply(200, "Keepalive")
        exit()
    sl_send_reply(501, "Not Implemented")
