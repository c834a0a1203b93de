"""`kill -9` the gateway and restart it on the same store → the publication is refreshed with
its stored ETag (SIP-If-Match, answered 200, no 412, no fresh publication) and the
subscription is refreshed inside its existing dialog (same Call-ID and tags, answered 200)
(RFC 3903 §4.4 refresh, RFC 6665 §4.1.2.2; standards.md §10, §16 cases 63 and 80).
"""

import time

from conftest import ALICE, BOB
from harness import sipmsg
from harness.procs import wait_until

CAROL = "sip:carol@127.0.0.1"
# -1: no time limit (pua_mi semantics), refreshed every ~0.8–0.9 × the configured
# default_expires (30 s in the harness) until removed; a positive value would be the
# publication's lifetime, which lapses instead of being refreshed.
PUB_EXPIRES = -1
PUB_GRANTED = 30
SUB_EXPIRES = 30


def test_restart_refreshes_publication_with_etag_and_subscription_in_dialog(gateway, relayed_kamailio, make_ua):
    kam, relay = relayed_kamailio
    # carol's state at Kamailio, so the gateway's subscription has something to show.
    epa = make_ua("carol-epa", "carol", kam.addr)
    assert epa.publish(CAROL, sipmsg.pidf(CAROL, "carol-here"), expires=300).status == 200

    res = gateway.ctl_publish(ALICE, sipmsg.pidf(ALICE, sipmsg.new_token("alice-")), expires=PUB_EXPIRES)
    assert res.returncode == 0, res.describe()
    relay.wait_exchange(
        "PUBLISH",
        lambda e: e.request.message.get("sip-if-match") is None and e.status == 200,
        timeout=10,
        what="initial PUBLISH answered 200",
    )

    res = gateway.ctl_subscribe(CAROL, BOB, expires=SUB_EXPIRES)
    assert res.returncode == 0, res.describe()
    initial = relay.wait_exchange(
        "SUBSCRIBE",
        lambda e: e.request.message.to_tag is None and e.status == 200,
        timeout=10,
        what="initial SUBSCRIBE answered 200",
    )
    call_id = initial.request.message.call_id
    from_tag = initial.request.message.from_tag
    to_tag = initial.final.message.to_tag
    wait_until(
        lambda: any(s.get("call_id") == call_id and s.get("state") == "active" for s in gateway.list_subscriptions()),
        timeout=10,
        interval=0.25,
        what="the subscription listed active",
    )

    gateway.kill9()
    killed_at = time.time()

    # What Kamailio last granted before the crash: the newest ETag and each expiry.
    pubs_before = [e for e in relay.exchanges("PUBLISH") if e.status == 200 and e.final.at < killed_at]
    last_pub = pubs_before[-1]
    etag = last_pub.final.message.get("sip-etag")
    assert etag, last_pub.final.message.summary()
    pub_deadline = last_pub.final.at + (last_pub.final.message.expires or PUB_GRANTED)
    subs_before = [
        e for e in relay.exchanges("SUBSCRIBE") if e.request.message.call_id == call_id and e.status == 200
    ]
    last_sub = subs_before[-1]
    sub_deadline = last_sub.final.at + (last_sub.final.message.expires or SUB_EXPIRES)

    gateway.restart()

    refreshed = relay.wait_exchange(
        "PUBLISH",
        lambda e: e.request.message.get("sip-if-match") == etag and e.final is not None,
        timeout=max(5.0, pub_deadline - time.time() + 5),
        what=f"PUBLISH with SIP-If-Match: {etag} after the restart",
        since=killed_at,
    )
    assert refreshed.status == 200, relay.describe("PUBLISH", since=killed_at)

    in_dialog = relay.wait_exchange(
        "SUBSCRIBE",
        lambda e: e.request.message.call_id == call_id and e.final is not None,
        timeout=max(5.0, sub_deadline - time.time() + 5),
        what=f"SUBSCRIBE in dialog {call_id} after the restart",
        since=killed_at,
    )
    m = in_dialog.request.message
    assert (m.from_tag, m.to_tag) == (from_tag, to_tag), m.summary()
    assert in_dialog.status == 200, relay.describe("SUBSCRIBE", since=killed_at)

    after_pubs = relay.exchanges("PUBLISH", since=killed_at)
    assert not [e for e in after_pubs if e.status == 412], relay.describe("PUBLISH", since=killed_at)
    assert not [
        e for e in after_pubs if e.request.message.get("sip-if-match") is None
    ], "a fresh PUBLISH after the restart (the ETag was lost):\n" + relay.describe("PUBLISH", since=killed_at)
    assert not [
        e for e in relay.exchanges("SUBSCRIBE", since=killed_at) if e.request.message.call_id != call_id
    ], "a new subscription dialog after the restart:\n" + relay.describe("SUBSCRIBE", since=killed_at)
