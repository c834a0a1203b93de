"""`ctl publish` of a PIDF for a presentity → a watcher subscribed at Kamailio receives a
NOTIFY carrying it (the gateway as EPA, RFC 3903 §4; standards.md §10, §16 case 62).

Path: ctl → gateway admin API → PUBLISH via the outbound proxy (the capturing relay) →
Kamailio → NOTIFY → scripted watcher.
"""

from conftest import ALICE
from harness import sipmsg
from harness.gateway import outcome_code


def test_publish_reaches_kamailio_watcher(gateway, relayed_kamailio, make_ua):
    kam, _relay = relayed_kamailio
    watcher = make_ua("bob-watcher", "bob", kam.addr)
    sub = watcher.subscribe(ALICE, event="presence", expires=120)
    assert sub.last_response.status == 200, sub.last_response.summary()
    sub.wait_notify(lambda n: n.state == "active", timeout=5, what="initial active NOTIFY")

    marker = sipmsg.new_token("gw-pub-")
    res = gateway.ctl_publish(ALICE, sipmsg.pidf(ALICE, marker), expires=60)
    assert res.returncode == 0, res.describe()
    code = outcome_code(res)
    assert code is None or 200 <= code < 300, res.describe()

    n = sub.wait_notify(lambda n: marker in n.body, timeout=10, what=f"NOTIFY carrying {marker}")
    assert n.state == "active", n.message.summary()
    assert "application/pidf+xml" in (n.message.get("content-type") or ""), n.message.summary()
