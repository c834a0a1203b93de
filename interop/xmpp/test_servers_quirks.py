"""Server behaviour the gateway must cope with, pinned per server (Prosody 0.12.3, ejabberd
23.01). Where a server departs from RFC 6121 the test says so; if a server upgrade changes a
behaviour, the test fails and the gateway's assumptions need a look.
"""

from __future__ import annotations

import pytest

from .fixtures import BOTH_SERVERS
from .loopthread import XmppTimeout, match
from .scenarios import BOB, alice_subscribed_to_bob, bob_subscribed_to_alice
from .stub_component import StubComponent


def kind(server) -> str:
    return server.kind


@BOTH_SERVERS
def test_login_probe_to_component_comes_from_full_jid(xmpp_server, make_xmpp_client, make_stub_component):
    """RFC 6121 §4.3.1 says the server probes from the user's bare JID; both Prosody and
    ejabberd probe from the full JID of the resource that logged in. The gateway must key
    probes (and answer them) by the bare JID."""
    alice, comp = alice_subscribed_to_bob(xmpp_server, make_xmpp_client, make_stub_component)
    alice.disconnect()
    comp.inbox.skip()
    alice.reconnect()
    assert comp.wait_presence(to=BOB, type="probe").from_ == alice.full


@BOTH_SERVERS
def test_probe_of_non_authorizing_user_is_silently_dropped(xmpp_server, make_xmpp_client, make_stub_component):
    """RFC 6121 §4.3.2 case 1 says SHOULD answer `unsubscribed`; neither server answers at
    all (Prosody 0.12 generates the `unsubscribed`, but its own outbound subscription handler
    drops it because no roster state changes). The gateway cannot learn "not authorized"
    from a probe."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    comp.probe(BOB, alice.bare)
    comp.inbox.expect_none(match("presence", from_=alice.bare), within=1.5)


@BOTH_SERVERS
def test_subscribe_from_component_is_acknowledged_with_unavailable_on_prosody_only(xmpp_server, make_xmpp_client, make_stub_component):
    """Prosody answers a new inbound subscribe at once with `unavailable` from the user's bare
    JID ("acknowledging receipt", mod_presence), before the user decides; ejabberd sends
    nothing until the user answers. The gateway must not read that `unavailable` as the
    user's answer or presence: the subscription is still pending."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    alice.send_available(show="away")
    comp.subscribe(BOB, alice.bare)
    alice.wait_subscription_request(from_=BOB)
    if kind(xmpp_server) == "prosody":
        got = comp.wait_presence(from_=alice.bare, to=BOB)
        assert (got.type, got.from_) == ("unavailable", "alice@xmpp.test")
    else:
        comp.inbox.expect_none(match("presence", from_=alice.bare), within=1.5)


@BOTH_SERVERS
def test_probe_of_offline_authorizing_user(xmpp_server, make_xmpp_client, make_stub_component):
    """RFC 6121 §4.3.2 case 3: unavailable from the bare JID. Prosody does that (with a
    urn:xmpp:delay stamp once the user has been online); ejabberd 23.01 (also with mod_last)
    does not answer at all, so the gateway must treat "no answer" as offline."""
    alice, comp = bob_subscribed_to_alice(xmpp_server, make_xmpp_client, make_stub_component)
    alice.stop()
    comp.wait_presence(from_=alice.bare, type="unavailable")
    comp.probe(BOB, alice.bare)
    if kind(xmpp_server) == "prosody":
        got = comp.wait_presence(from_=alice.bare, to=BOB, type="unavailable")
        assert got.from_ == "alice@xmpp.test"
    else:
        comp.inbox.expect_none(match("presence", from_=alice.bare), within=1.5)


@BOTH_SERVERS
def test_user_stanza_without_xml_lang_reaches_component_stamped_with_stream_lang(xmpp_server, make_xmpp_client, make_stub_component):
    """Both servers stamp the client stream's xml:lang (slixmpp opens with 'en') on a user
    stanza that has none: the gateway's parser sees xml:lang on user stanzas."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    alice.send_raw(f"<presence to='{BOB}' type='subscribe' id='nolang'/>")
    assert comp.wait_presence(to=BOB, type="subscribe").lang == "en"


# Prosody stamps its default language on component stanzas without xml:lang; ejabberd
# passes them through unchanged. An explicit xml:lang is kept by both.
COMPONENT_STANZA_LANG = {"prosody": "en", "ejabberd": None}


@BOTH_SERVERS
def test_component_stanza_xml_lang_as_delivered_to_user(xmpp_server, make_xmpp_client, make_stub_component):
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    comp.send_raw(f"<presence from='{BOB}' to='{alice.bare}' id='nolang'><show>away</show></presence>")
    assert alice.wait_presence(from_=BOB, show="away").lang == COMPONENT_STANZA_LANG[kind(xmpp_server)]
    comp.send_raw(f"<presence from='{BOB}' to='{alice.bare}' id='de' xml:lang='de'><show>xa</show></presence>")
    assert alice.wait_presence(from_=BOB, show="xa").lang == "de"


@BOTH_SERVERS
def test_component_stanza_from_foreign_domain_closes_the_stream(xmpp_server, make_xmpp_client, make_stub_component):
    """XEP-0114: `from` must be in the component's domain. Both servers answer a violation
    with the stream error <invalid-from/> and close the component's stream: one bad stanza
    takes the whole link down."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    comp.available("bob@other.test", alice.bare, show="away")
    comp.wait_disconnected(timeout=5)
    assert any("invalid-from" in e for e in comp.stream_errors), comp.stream_errors
    alice.inbox.expect_none(match("presence", from_="bob@other.test"), within=0.5)


@BOTH_SERVERS
def test_presence_from_component_without_subscription_is_delivered(xmpp_server, make_xmpp_client, make_stub_component):
    """Neither server filters inbound presence by subscription state: available presence
    from a SIP user the XMPP user never subscribed to still reaches the user."""
    comp = make_stub_component(xmpp_server)
    alice = make_xmpp_client(xmpp_server, "alice")
    comp.available("carol@sip.xmpp.test/sip", alice.bare, show="xa")
    assert alice.wait_presence(from_="carol@sip.xmpp.test", type="available").show == "xa"


@BOTH_SERVERS
def test_subscription_request_to_offline_user_is_delivered_at_next_login(xmpp_server, make_xmpp_client, make_stub_component):
    """A subscribe from the component while the user is offline is stored and presented at
    the user's next login (ejabberd re-sends it without the original id)."""
    comp = make_stub_component(xmpp_server)
    xmpp_server.register("alice", "pw")
    comp.subscribe(BOB, "alice@xmpp.test")
    alice = make_xmpp_client(xmpp_server, "alice")
    alice.wait_subscription_request(from_=BOB)


# Stream error conditions for a component handshake that names a domain the server does not
# serve: Prosody says so before the handshake, ejabberd answers the handshake itself.
UNKNOWN_DOMAIN_ERROR = {"prosody": "host-unknown", "ejabberd": "not-authorized"}


@BOTH_SERVERS
def test_component_for_unknown_domain_is_refused_with_server_specific_error(xmpp_server):
    comp = StubComponent("other.test", xmpp_server.component_secret, xmpp_server.component_addr)
    try:
        with pytest.raises(XmppTimeout):
            comp.start(timeout=5)
        assert any(UNKNOWN_DOMAIN_ERROR[kind(xmpp_server)] in e for e in comp.stream_errors), comp.stream_errors
    finally:
        comp.stop()


@BOTH_SERVERS
def test_second_component_connection_for_same_domain(xmpp_server, make_stub_component):
    """Prosody refuses a second connection for a connected component domain with <conflict/>
    (the first stays): a gateway reconnecting before the server noticed its old stream died
    is refused until then. ejabberd accepts both connections."""
    first = make_stub_component(xmpp_server)
    second = StubComponent(xmpp_server.component_domain, xmpp_server.component_secret, xmpp_server.component_addr)
    try:
        if kind(xmpp_server) == "prosody":
            with pytest.raises(XmppTimeout):
                second.start(timeout=5)
            assert any("conflict" in e for e in second.stream_errors), second.stream_errors
        else:
            second.start(timeout=5)
            assert second.connected
        assert first.connected
    finally:
        second.stop()


@pytest.mark.parametrize("xmpp_server", ["ejabberd"], indirect=True)
def test_ejabberd_control_commands_reach_the_isolated_node(xmpp_server):
    """The isolated node answers ejabberdctl commands (its own node name, cookie, port)."""
    xmpp_server.register("zed", "pw")
    assert "zed" in xmpp_server.ctl("registered_users", xmpp_server.domain).split()


def test_wait_for_reports_what_was_received_on_timeout(prosody_server, make_xmpp_client):
    """The harness's own failure message lists the stanzas received (self-check)."""
    alice = make_xmpp_client(prosody_server, "alice")
    with pytest.raises(XmppTimeout, match="alice@xmpp.test/scripted"):
        alice.wait_presence(from_="nobody@xmpp.test", timeout=0.5)
