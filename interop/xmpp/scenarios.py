"""Subscription set-ups shared by the stand-in component tests."""

from __future__ import annotations

from .client import ScriptedClient
from .servers import XmppServer
from .stub_component import StubComponent

BOB = "bob@sip.xmpp.test"


def alice_subscribed_to_bob(server: XmppServer, make_xmpp_client, make_stub_component) -> tuple[ScriptedClient, StubComponent]:
    """alice subscribes to bob, the component approves: alice's roster has bob as 'to'."""
    comp = make_stub_component(server)
    alice = make_xmpp_client(server, "alice")
    alice.subscribe(BOB)
    comp.wait_presence(from_=alice.bare, to=BOB, type="subscribe")
    comp.subscribed(BOB, alice.bare)
    alice.wait_presence(from_=BOB, type="subscribed")
    alice.wait_roster(BOB, "to")
    return alice, comp


def bob_subscribed_to_alice(server: XmppServer, make_xmpp_client, make_stub_component) -> tuple[ScriptedClient, StubComponent]:
    """The component subscribes bob to alice, alice approves: bob may see alice's presence."""
    comp = make_stub_component(server)
    alice = make_xmpp_client(server, "alice", on_subscribe="accept")
    comp.subscribe(BOB, alice.bare)
    alice.wait_subscription_request(from_=BOB)
    comp.wait_presence(from_=alice.bare, to=BOB, type="subscribed")
    alice.wait_roster(BOB, "from")
    return alice, comp
