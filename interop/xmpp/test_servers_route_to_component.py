"""The real XMPP servers route presence to and from an XEP-0114 component (standards.md §2,
§5). A stand-in component (stub_component.py) plays the gateway, so these tests prove the
peers and the harness work before the gateway is in the picture. Each runs against Prosody
0.12 and ejabberd 23.01.

Names: alice is an XMPP user (alice@xmpp.test); bob@sip.xmpp.test is a SIP user as the
gateway would present him.
"""

from __future__ import annotations

import pytest

from .fixtures import BOTH_SERVERS
from .loopthread import XmppTimeout
from .scenarios import BOB, alice_subscribed_to_bob, bob_subscribed_to_alice
from .stub_component import StubComponent

@BOTH_SERVERS
def test_user_subscribe_reaches_component_from_bare_jid(xmpp_server, make_xmpp_client, make_stub_component):
    """RFC 6121 §3.1.2: the outbound subscribe is stamped with the user's bare JID."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    alice.subscribe(BOB)
    got = comp.wait_presence(to=BOB, type="subscribe")
    assert got.from_ == "alice@xmpp.test"
    assert alice.roster()[BOB].ask == "subscribe"


@BOTH_SERVERS
def test_component_subscribed_and_presence_reach_user(xmpp_server, make_xmpp_client, make_stub_component):
    """(a) in miniature: the component approves and sends available presence with show and
    status from a full JID; the user sees both and the roster becomes 'to'."""
    alice, comp = alice_subscribed_to_bob(xmpp_server, make_xmpp_client, make_stub_component)
    comp.available(f"{BOB}/sip", alice.bare, show="away", status="at lunch")
    got = alice.wait_presence(from_=BOB, type="available")
    assert (got.from_, got.show, got.status) == (f"{BOB}/sip", "away", "at lunch")
    comp.unavailable(f"{BOB}/sip", alice.bare)
    assert alice.wait_presence(from_=BOB, type="unavailable").from_ == f"{BOB}/sip"


@BOTH_SERVERS
def test_user_login_probes_component_for_subscribed_contact(xmpp_server, make_xmpp_client, make_stub_component):
    """RFC 6121 §4.3: on initial presence the user's server probes each 'to' contact; the
    component's answer reaches the user. This is how the gateway learns a watcher is back."""
    alice, comp = alice_subscribed_to_bob(xmpp_server, make_xmpp_client, make_stub_component)
    alice.disconnect()
    comp.inbox.skip()
    alice.reconnect()
    probe = comp.wait_presence(to=BOB, type="probe")
    # RFC 6121 §4.3.1 says bare JID; both servers use the full JID (test_servers_quirks.py).
    assert probe.bare_from == "alice@xmpp.test"
    comp.available(f"{BOB}/sip", alice.bare, show="dnd")
    assert alice.wait_presence(from_=BOB, type="available").show == "dnd"


@BOTH_SERVERS
def test_user_approval_reaches_component_then_presence_follows(xmpp_server, make_xmpp_client, make_stub_component):
    """(b) in miniature: the component subscribes for bob, the user approves, the component
    gets `subscribed` and then each presence change, and `unavailable` at logout."""
    alice, comp = bob_subscribed_to_alice(xmpp_server, make_xmpp_client, make_stub_component)
    alice.send_available(show="dnd", status="in a meeting")
    got = comp.wait_presence(from_=alice.bare, to=BOB, type="available", show="dnd")
    assert got.status == "in a meeting"
    assert got.from_ == alice.full
    alice.send_available(show="xa")
    comp.wait_presence(from_=alice.bare, to=BOB, type="available", show="xa")
    alice.stop()
    assert comp.wait_presence(from_=alice.bare, to=BOB, type="unavailable").from_ == alice.full


@BOTH_SERVERS
def test_user_denial_reaches_component_as_unsubscribed(xmpp_server, make_xmpp_client, make_stub_component):
    """(c) in miniature: the user denies; the component gets `unsubscribed` from the bare JID."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice", on_subscribe="deny")
    comp.subscribe(BOB, alice.bare)
    alice.wait_subscription_request(from_=BOB)
    assert comp.wait_presence(to=BOB, type="unsubscribed").from_ == "alice@xmpp.test"
    assert BOB not in alice.roster() or alice.roster()[BOB].subscription == "none"


@BOTH_SERVERS
def test_component_probe_of_authorizing_user_is_answered_with_presence(xmpp_server, make_xmpp_client, make_stub_component):
    """RFC 6121 §4.3.2 case 4: a probe from an authorized contact gets the last presence of
    each available resource, from the full JID."""
    alice, comp = bob_subscribed_to_alice(xmpp_server, make_xmpp_client, make_stub_component)
    alice.send_available(show="away", status="back soon")
    comp.wait_presence(from_=alice.bare, type="available", show="away")
    comp.probe(BOB, alice.bare)
    got = comp.wait_presence(from_=alice.bare, to=BOB, type="available")
    assert (got.from_, got.show, got.status) == (alice.full, "away", "back soon")


@BOTH_SERVERS
def test_component_with_wrong_secret_is_refused(xmpp_server):
    """XEP-0114 §3.2: a wrong handshake closes the stream."""
    comp = StubComponent(xmpp_server.component_domain, "not-the-secret", xmpp_server.component_addr)
    try:
        with pytest.raises(XmppTimeout):
            comp.start(timeout=5)
        assert not comp.connected
    finally:
        comp.stop()


@BOTH_SERVERS
def test_component_reconnects_after_server_restart_and_roster_survives(xmpp_server, make_xmpp_client, make_stub_component):
    """The restart helper for interop test (f): same ports, same data; component and client
    reconnect, the user's login probes the component again."""
    alice, comp = alice_subscribed_to_bob(xmpp_server, make_xmpp_client, make_stub_component)
    old_pid = xmpp_server.pid
    xmpp_server.restart()
    assert xmpp_server.pid != old_pid
    comp.wait_disconnected()
    alice.wait_disconnected()
    comp.reconnect()
    comp.inbox.skip()
    alice.reconnect()
    assert alice.roster()[BOB].subscription == "to"
    comp.wait_presence(from_=alice.bare, to=BOB, type="probe")
    comp.available(f"{BOB}/sip", alice.bare, show="chat")
    assert alice.wait_presence(from_=BOB, type="available").show == "chat"


def test_prosody_killed_and_restarted_after_downtime_keeps_roster(prosody_server, make_xmpp_client, make_stub_component):
    """restart(hard=True, down_for=...): a crash (SIGKILL by PID) and some downtime; the
    persisted subscription is still there when everyone reconnects. (Prosody only: ejabberd
    killed seconds after a write loses it — mnesia's dets tables were not synced.)"""
    xmpp_server = prosody_server
    alice, comp = alice_subscribed_to_bob(xmpp_server, make_xmpp_client, make_stub_component)
    xmpp_server.restart(hard=True, down_for=0.5)
    comp.wait_disconnected()
    alice.wait_disconnected()
    comp.reconnect()
    alice.reconnect()
    assert alice.roster()[BOB].subscription == "to"
