"""X2S through real servers: an XMPP user subscribes to a SIP user's component JID; the
gateway SUBSCRIBEs at Kamailio and turns the SIP user's PUBLISHes into XMPP presence
(RFC 8048 §5.2, standards.md §7.1, §7.6)."""

from harness.bridge import component_jid, rpid_pidf, sip_user_uri
from xmpp.fixtures import BOTH_SERVERS

BOB_JID = component_jid("bob")
BOB_URI = sip_user_uri("bob")


@BOTH_SERVERS
def test_xmpp_user_sees_subscribed_then_available_away_unavailable(
    xmpp_server, bridge_kamailio, make_bridge_gateway, make_xmpp_client, make_ua
):
    make_bridge_gateway(xmpp_server, bridge_kamailio.uri, mode="notifier")
    alice = make_xmpp_client(xmpp_server, "alice")
    bob = make_ua("bob", "bob", bridge_kamailio.addr)
    alice.inbox.skip()

    alice.subscribe(BOB_JID)
    # `subscribed` comes from the first active NOTIFY (RFC 8048 §5.2.1): the gateway's
    # SUBSCRIBE reached the presence server through the outbound proxy.
    alice.wait_presence(from_=BOB_JID, type="subscribed", timeout=10)

    first = bob.publish(BOB_URI, rpid_pidf(BOB_URI, "ph1", "open", note="at my desk"), expires=120)
    assert first.status == 200, first.summary()
    etag = first.get("sip-etag")
    on = alice.wait_presence(from_=f"{BOB_JID}/ph1", type="available", timeout=10)
    assert on.show is None and on.status == "at my desk", on.xml

    away = bob.publish(BOB_URI, rpid_pidf(BOB_URI, "ph1", "open", away=True, note="lunch"), expires=120, etag=etag)
    assert away.status == 200, away.summary()
    got = alice.wait_presence(from_=f"{BOB_JID}/ph1", type="available", show="away", timeout=10)
    assert got.status == "lunch", got.xml

    closed = bob.publish(BOB_URI, rpid_pidf(BOB_URI, "ph1", "closed"), expires=120, etag=away.get("sip-etag"))
    assert closed.status == 200, closed.summary()
    alice.wait_presence(from_=f"{BOB_JID}/ph1", type="unavailable", timeout=10)
