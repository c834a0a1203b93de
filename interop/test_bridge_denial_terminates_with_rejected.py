"""S2X denial through real servers, notifier mode: the XMPP user answers a SIP user's
subscription request with `unsubscribed` → the SIP dialog ends with
`terminated;reason=rejected` (RFC 8048 §5.3.1, standards.md §7.3 point 4, case 36)."""

from harness.bridge import component_jid, sub_state, xmpp_user_sip_uri
from xmpp.fixtures import BOTH_SERVERS

ALICE_URI = xmpp_user_sip_uri("alice")
CAROL_JID = component_jid("carol")


@BOTH_SERVERS
def test_denied_sip_watcher_gets_terminated_rejected(
    xmpp_server, bridge_kamailio, make_bridge_gateway, make_xmpp_client, make_ua
):
    gw = make_bridge_gateway(xmpp_server, bridge_kamailio.uri, mode="notifier")
    alice = make_xmpp_client(xmpp_server, "alice", on_subscribe="manual")
    carol = make_ua("carol", "carol", gw.contact_hostport)

    sub = carol.subscribe(ALICE_URI, expires=600)
    assert sub.last_response.status == 200, sub.last_response.summary()
    alice.wait_subscription_request(from_=CAROL_JID, timeout=10)

    alice.unsubscribed(CAROL_JID)
    n = sub.wait_notify(lambda n: sub_state(n)[0] == "terminated", 10, "a terminated NOTIFY")
    assert sub_state(n) == ("terminated", "rejected"), n.message.get("subscription-state")
    assert not n.message.body, f"the rejecting NOTIFY has a body: {n.body!r}"
    assert all(sub_state(m)[0] != "active" for m in sub.notifies), "an active NOTIFY went to a denied watcher"
