"""S2X through real servers, notifier mode: a SIP user SUBSCRIBEs to an XMPP user's SIP URI
at the gateway; the XMPP user is asked, approves, and the SIP user gets PIDF NOTIFYs that
follow the XMPP user's status (RFC 8048 §5.3, standards.md §7.3, §7.5)."""

from harness.bridge import active_with, component_jid, sub_state, xmpp_user_sip_uri
from xmpp.fixtures import BOTH_SERVERS

ALICE_URI = xmpp_user_sip_uri("alice")
CAROL_JID = component_jid("carol")


@BOTH_SERVERS
def test_sip_watcher_gets_active_pidf_after_approval_then_status_changes(
    xmpp_server, bridge_kamailio, make_bridge_gateway, make_xmpp_client, make_ua
):
    gw = make_bridge_gateway(xmpp_server, bridge_kamailio.uri, mode="notifier")
    alice = make_xmpp_client(xmpp_server, "alice", on_subscribe="manual")
    carol = make_ua("carol", "carol", gw.contact_hostport)

    sub = carol.subscribe(ALICE_URI, expires=600)
    assert sub.last_response.status == 200, sub.last_response.summary()
    sub.wait_notify(lambda n: sub_state(n)[0] == "pending", 10, "a pending NOTIFY")
    alice.wait_subscription_request(from_=CAROL_JID, timeout=10)

    alice.subscribed(CAROL_JID)
    sub.wait_notify(active_with("open"), 10, "an active NOTIFY with an open PIDF")

    alice.send_available(show="away", status="Lunch break")
    n = sub.wait_notify(active_with("open", show="away", note="Lunch break"), 10, "a NOTIFY with away + note")
    assert (n.message.get("content-type") or "").startswith("application/pidf+xml"), n.message.summary()
