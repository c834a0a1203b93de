"""The XMPP server restarts under the gateway: the component link comes back by itself
(reconnect with back-off) and presence is current again in both directions within 5 s of
the server being back (product.md: after (re)connecting, probe every authorized user)."""

import time

from harness.bridge import active_with, component_jid, rpid_pidf, sip_user_uri, xmpp_user_sip_uri

BOB_JID = component_jid("bob")
BOB_URI = sip_user_uri("bob")
CAROL_JID = component_jid("carol")
ALICE_URI = xmpp_user_sip_uri("alice")


def test_prosody_restart_gateway_reconnects_and_presence_is_current_within_5s(
    prosody_server, bridge_kamailio, make_bridge_gateway, make_xmpp_client, make_ua
):
    server = prosody_server
    gw = make_bridge_gateway(server, bridge_kamailio.uri, mode="notifier")
    alice = make_xmpp_client(server, "alice", on_subscribe="manual")
    bob = make_ua("bob", "bob", bridge_kamailio.addr)
    carol = make_ua("carol", "carol", gw.contact_hostport)

    alice.subscribe(BOB_JID)
    alice.wait_presence(from_=BOB_JID, type="subscribed", timeout=10)
    pub = bob.publish(BOB_URI, rpid_pidf(BOB_URI, "ph1", "open", note="on the phone"), expires=300)
    assert pub.status == 200, pub.summary()
    alice.wait_presence(from_=f"{BOB_JID}/ph1", type="available", timeout=10)

    sub = carol.subscribe(ALICE_URI, expires=600)
    assert sub.last_response.status == 200, sub.last_response.summary()
    alice.wait_subscription_request(from_=CAROL_JID, timeout=10)
    alice.subscribed(CAROL_JID)
    sub.wait_notify(active_with("open"), 10, "an active NOTIFY before the restart")

    links = gw.links_up()
    server.restart()  # SIGTERM, ports closed, started again on the same ports and data
    back = time.monotonic()
    alice.wait_disconnected(timeout=5)
    alice.inbox.skip()
    # alice logs in again at once, most likely before the gateway's component is back:
    # her login probe to bob is bounced, her broadcast to carol is lost.
    alice.reconnect()
    alice.send_available(show="xa", status="back after restart")

    sub.wait_notify(
        active_with("open", show="xa", note="back after restart"),
        max(0.1, 5.0 - (time.monotonic() - back)),
        "alice's new status at carol within 5 s of the server restart",
    )
    alice.wait_presence(
        from_=f"{BOB_JID}/ph1", type="available", status="on the phone", timeout=max(0.1, 5.0 - (time.monotonic() - back))
    )
    assert gw.links_up() == links + 1, "the component link did not come back exactly once"
