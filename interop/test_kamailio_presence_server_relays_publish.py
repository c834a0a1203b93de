"""The peer works: a PUBLISH at the Kamailio presence server reaches a watcher subscribed
there, without the gateway (RFC 3903 §6 ESC + RFC 3856 PA; standards.md §6, §10).

This validates the suite's Kamailio setup (presence.cfg, sqlite schema, force_active=1) and
the scripted UA, so a failing gateway test points at the gateway, not at the peer.
"""

from conftest import ALICE, BOB  # noqa: F401  (BOB documents the watcher identity)
from harness import sipmsg


def test_kamailio_presence_server_relays_publish(kamailio, make_ua):
    watcher = make_ua("bob-watcher", "bob", kamailio.addr)
    publisher = make_ua("alice-epa", "alice", kamailio.addr)

    sub = watcher.subscribe(ALICE, event="presence", expires=60)
    assert sub.last_response.status == 200, sub.last_response.summary()
    # RFC 6665 §4.2.1.2: a NOTIFY follows every 2xx at once; force_active=1 makes it active.
    sub.wait_notify(lambda n: n.state == "active", timeout=5, what="initial active NOTIFY")

    marker = sipmsg.new_token("kam-only-")
    resp = publisher.publish(ALICE, sipmsg.pidf(ALICE, marker), expires=60)
    assert resp.status == 200, resp.summary()
    assert resp.get("sip-etag"), f"200 to PUBLISH without SIP-ETag: {resp.summary()}"

    n = sub.wait_notify(lambda n: marker in n.body, timeout=10, what=f"NOTIFY carrying {marker}")
    assert n.state == "active", n.message.summary()
    assert "application/pidf+xml" in (n.message.get("content-type") or ""), n.message.summary()
