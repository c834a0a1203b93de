"""`ctl subscribe` with a short Expires → the gateway holds the dialog at Kamailio by
refreshing it in-dialog before it expires, and `ctl list subscriptions` shows the latest
state NOTIFYed in it (RFC 6665 §4.1.2.2 refresh, §4.1.3 NOTIFY; standards.md §6.1–§6.3, §6.6).
"""

import time

from conftest import ALICE, BOB
from harness import sipmsg
from harness.gateway import outcome_code
from harness.procs import sleep_until, wait_until

EXPIRES = 20


def test_gateway_subscription_is_refreshed_and_listed(gateway, relayed_kamailio, make_ua):
    kam, relay = relayed_kamailio
    epa = make_ua("alice-epa", "alice", kam.addr)
    first = sipmsg.new_token("state-1-")
    pub = epa.publish(ALICE, sipmsg.pidf(ALICE, first), expires=300)
    assert pub.status == 200, pub.summary()

    res = gateway.ctl_subscribe(ALICE, BOB, expires=EXPIRES)
    assert res.returncode == 0, res.describe()
    code = outcome_code(res)
    assert code is None or 200 <= code < 300, res.describe()

    initial = relay.wait_exchange(
        "SUBSCRIBE",
        lambda e: e.request.message.to_tag is None
        and "alice@" in (e.request.message.request_uri or "")
        and e.final is not None,
        timeout=10,
        what="initial SUBSCRIBE for alice",
    )
    assert initial.status == 200, relay.describe("SUBSCRIBE")
    granted = initial.final.message.expires
    assert granted is not None and 0 < granted <= EXPIRES, initial.final.message.summary()
    call_id = initial.request.message.call_id
    from_tag = initial.request.message.from_tag
    to_tag = initial.final.message.to_tag
    first_cseq = initial.request.message.cseq[0]

    def in_dialog_refresh(e) -> bool:
        m = e.request.message
        return (
            m.call_id == call_id
            and m.from_tag == from_tag
            and m.to_tag == to_tag
            and m.cseq[0] > first_cseq
            and (m.expires or 0) > 0
            and e.final is not None
        )

    refresh = relay.wait_exchange(
        "SUBSCRIBE",
        in_dialog_refresh,
        timeout=granted + 5,
        what=f"in-dialog refresh SUBSCRIBE (Call-ID {call_id}) within {granted}s",
        since=initial.request.at,
    )
    assert refresh.request.at < initial.request.at + granted, "refresh sent after the subscription expired"
    assert refresh.status == 200, relay.describe("SUBSCRIBE")

    # The dialog outlives its first interval at Kamailio.
    sleep_until(initial.request.at + granted + 1, max_wait=EXPIRES + 5)
    held = [w for w in kam.active_watchers(ALICE) if w["callid"] == call_id]
    assert held, f"Kamailio no longer holds the gateway's subscription {call_id}: {kam.active_watchers()}"
    assert held[0]["expires"] > time.time(), held[0]

    # A new state published now reaches the gateway in that dialog and is listed.
    second = sipmsg.new_token("state-2-")
    pub2 = epa.publish(ALICE, sipmsg.pidf(ALICE, second), expires=300, etag=pub.get("sip-etag"))
    assert pub2.status == 200, pub2.summary()

    def listed():
        for s in gateway.list_subscriptions():
            if s.get("presentity") == ALICE and s.get("event") == "presence" and second in (s.get("last_body") or ""):
                return s
        return None

    entry = wait_until(listed, timeout=10, interval=0.25, what=f"`ctl list subscriptions` showing {second}")
    assert entry["state"] == "active", entry
    assert entry["call_id"] == call_id, entry
    assert entry["watcher"] == BOB, entry
