"""Kamailio 5.6.3 (pua + pua_rpc, interop/kamailio/pua_client.cfg) as a PUBLISH client of
the gateway's presence agent: carol's PIDF published through Kamailio's RPC reaches a
scripted watcher subscribed at the gateway, in a NOTIFY carrying carol's tuple (RFC 3903
EPA -> ESC -> RFC 3856 NOTIFY).

Kamailio's pua cannot answer a digest challenge, so this gateway trusts loopback. Kamailio
sends Expires = requested + 1 (3601 for 3600): the gateway must grant at most its
max_expires (3600) rather than refuse.
"""

import re
from pathlib import Path

import pytest

from harness import sipmsg
from harness.gateway import SipUser, running_agent_gateway
from harness.kamailio_pua import KamailioPua


CAROL = "sip:carol@sip.test"
ALICE = "sip:alice@sip.test"


@pytest.fixture
def agent_gateway(tmp_path: Path, diagnostics):
    with running_agent_gateway(
        tmp_path / "gateway", diagnostics, [SipUser("carol", "sip.test", "carolpw"), SipUser("alice", "sip.test", "alicepw")], trusted=["127.0.0.0/8"]
    ) as gw:
        yield gw


@pytest.fixture
def kamailio_pua(tmp_path: Path, agent_gateway, diagnostics):
    k = KamailioPua(tmp_path / "kamailio-pua", agent_gateway.contact_hostport)
    diagnostics.files += [k.log_path, k.run_dir / "rpc.log"]
    try:
        k.start()
        yield k
    finally:
        k.stop()


def test_kamailio_pua_publish_reaches_gateway_watcher(agent_gateway, kamailio_pua, make_ua):
    watcher = make_ua("alice-watcher", "alice", agent_gateway.contact_hostport)
    # Same domain as carol (same_domain = "allow"): the subscription is active at once. The
    # UA's Contact stays its loopback address.
    watcher.aor = ALICE
    sub = watcher.subscribe(CAROL, event="presence", expires=600, accept="application/pidf+xml")
    assert sub.last_response.status in (200, 202), sub.last_response.summary()
    sub.wait_notify(lambda n: n.state == "active", timeout=5, what="initial active NOTIFY")

    marker = sipmsg.new_token("carol-kam-")
    body = sipmsg.pidf(CAROL, marker, tuple_id="carol-kam-tuple")
    result = kamailio_pua.publish(CAROL, body, expires=3600)
    assert result and result.get("SIP-ETag"), f"no SIP-ETag in pua.publish's result: {result}"
    assert 0 < int(result["Expires"]) <= 3600, f"granted Expires above max_expires: {result}"

    n = sub.wait_notify(lambda n: marker in n.body, timeout=10, what=f"NOTIFY carrying {marker}")
    assert n.state == "active", n.message.summary()
    assert "application/pidf+xml" in (n.message.get("content-type") or ""), n.message.summary()
    # Either quote style is XML (the gateway writes single quotes).
    assert re.search(r"id=[\"']carol-kam-tuple[\"']", n.body) and "<basic>open</basic>" in n.body, n.body

    # A bodyless refresh through pua (content type "." + the ETag) -> a new ETag.
    refreshed = kamailio_pua.publish(CAROL, b"", expires=3600, etag=result["SIP-ETag"])
    assert refreshed.get("SIP-ETag") and refreshed["SIP-ETag"] != result["SIP-ETag"], (result, refreshed)
