"""Publish mode (OpenSIPS/Kamailio compatible) against Kamailio: the gateway PUBLISHes an
XMPP user's presence for her SIP URI, and a SIP watcher left pending by the presence server
becomes exactly one XMPP subscription request (standards.md §10, §11; anchors.md §2.3).

Precondition of both tests: alice already authorized one SIP contact (carol) in XMPP, so
her server sends her presence to the gateway (harness.bridge.authorize_before_gateway)."""

from harness.bridge import active_with, authorize_before_gateway, component_jid, sub_state, xmpp_user_sip_uri
from harness.procs import wait_until
from xmpp.loopthread import match

ALICE_URI = xmpp_user_sip_uri("alice")
CAROL_JID = component_jid("carol")
DAVE_JID = component_jid("dave")


def _alice_authorized_carol(server, make_stub_component, make_xmpp_client) -> None:
    first = make_xmpp_client(server, "alice", on_subscribe="manual", resource="setup")
    authorize_before_gateway(make_stub_component(server), first, CAROL_JID)
    first.stop()


def test_xmpp_user_online_is_published_to_kamailio_watcher(
    prosody_server, bridge_kamailio, make_bridge_gateway, make_stub_component, make_xmpp_client, make_ua
):
    _alice_authorized_carol(prosody_server, make_stub_component, make_xmpp_client)
    make_bridge_gateway(prosody_server, bridge_kamailio.uri, mode="publish")
    erin = make_ua("erin", "erin", bridge_kamailio.addr)
    watch = erin.subscribe(ALICE_URI, expires=300)
    assert watch.last_response.status in (200, 202), watch.last_response.summary()

    alice = make_xmpp_client(prosody_server, "alice", on_subscribe="manual")
    alice.send_available(status="published by the gateway")
    watch.wait_notify(active_with("open", note="published by the gateway"), 10, "alice's state at the SIP watcher")


def test_pending_winfo_watcher_becomes_exactly_one_xmpp_subscribe(
    prosody_server, pending_kamailio, make_bridge_gateway, make_stub_component, make_xmpp_client, make_ua
):
    kam = pending_kamailio
    _alice_authorized_carol(prosody_server, make_stub_component, make_xmpp_client)
    gw = make_bridge_gateway(prosody_server, kam.uri, mode="publish")
    alice = make_xmpp_client(prosody_server, "alice", on_subscribe="manual")
    # Online → published, and the gateway watches alice's presence.winfo (its view, so the
    # test does not read Kamailio's database while Kamailio writes it).
    wait_until(
        lambda: [
            s
            for s in gw.list_subscriptions()
            if s["event"] == "presence.winfo" and s["presentity"] == ALICE_URI and s["state"] == "active"
        ],
        10,
        interval=0.3,
        what="the gateway's active presence.winfo subscription for alice",
    )

    dave = make_ua("dave", "dave", kam.addr)
    watch = dave.subscribe(ALICE_URI, expires=300)
    assert watch.last_response.status in (200, 202), watch.last_response.summary()
    watch.wait_notify(lambda n: sub_state(n)[0] == "pending", 10, "a pending NOTIFY (Kamailio has no rule for dave)")
    alice.wait_subscription_request(from_=DAVE_JID, timeout=10)

    # Kamailio repeats the watcher list (dave refreshes; a second watcher arrives): dave is
    # still pending, and must not be asked again.
    assert watch.refresh(300).status in (200, 202)
    frank = make_ua("frank", "frank", kam.addr).subscribe(ALICE_URI, expires=300)
    alice.wait_subscription_request(from_=component_jid("frank"), timeout=10)
    history = [r for r in alice.inbox.history() if r.type == "subscribe" and r.bare_from == DAVE_JID]
    assert len(history) == 1, [r.xml for r in history]
    alice.inbox.expect_none(match("presence", type="subscribe", from_=DAVE_JID), within=2.0)
    assert frank.last_response.status in (200, 202)
