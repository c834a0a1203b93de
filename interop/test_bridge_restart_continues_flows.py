"""A crashed gateway (`kill -9`) restarted on the same store continues both directions
without anyone subscribing again (product.md, Persistence): the SIP user's next PUBLISH
reaches the XMPP watcher through the restored X2S dialog, and the XMPP user's next status
reaches the SIP watcher on that watcher's existing notifier dialog."""

from harness.bridge import active_with, component_jid, rpid_pidf, sip_user_uri, xmpp_user_sip_uri
from xmpp.loopthread import match

BOB_JID = component_jid("bob")
BOB_URI = sip_user_uri("bob")
CAROL_JID = component_jid("carol")
ALICE_URI = xmpp_user_sip_uri("alice")


def test_kill9_and_restart_keeps_x2s_and_s2x_flowing(
    xmpp_server, bridge_kamailio, make_bridge_gateway, make_xmpp_client, make_ua
):
    gw = make_bridge_gateway(xmpp_server, bridge_kamailio.uri, mode="notifier")
    alice = make_xmpp_client(xmpp_server, "alice", on_subscribe="manual")
    bob = make_ua("bob", "bob", bridge_kamailio.addr)
    carol = make_ua("carol", "carol", gw.contact_hostport)

    # X2S: alice watches bob.
    alice.subscribe(BOB_JID)
    alice.wait_presence(from_=BOB_JID, type="subscribed", timeout=10)
    pub = bob.publish(BOB_URI, rpid_pidf(BOB_URI, "ph1", "open", note="before crash"), expires=300)
    assert pub.status == 200, pub.summary()
    alice.wait_presence(from_=f"{BOB_JID}/ph1", type="available", status="before crash", timeout=10)

    # S2X: carol watches alice.
    sub = carol.subscribe(ALICE_URI, expires=600)
    assert sub.last_response.status == 200, sub.last_response.summary()
    alice.wait_subscription_request(from_=CAROL_JID, timeout=10)
    alice.subscribed(CAROL_JID)
    sub.wait_notify(active_with("open"), 10, "an active NOTIFY before the crash")

    gw.kill9()
    gw.restart()  # same ports and store; returns once the component link is up again
    alice.inbox.skip()

    pub2 = bob.publish(
        BOB_URI, rpid_pidf(BOB_URI, "ph1", "open", away=True, note="after crash"), expires=300, etag=pub.get("sip-etag")
    )
    assert pub2.status == 200, pub2.summary()
    alice.wait_presence(from_=f"{BOB_JID}/ph1", type="available", show="away", status="after crash", timeout=10)

    alice.send_available(show="dnd", status="after restart")
    sub.wait_notify(active_with("open", show="dnd", note="after restart"), 10, "the new status on the old dialog")
    assert not carol.unmatched_notifies, "the gateway NOTIFYed outside carol's dialog: " + ", ".join(
        m.summary() for m in carol.unmatched_notifies
    )
    # Nobody was asked again: the authorizations survived the crash.
    alice.inbox.expect_none(match("presence", type="subscribe", from_=CAROL_JID), within=1.0)
