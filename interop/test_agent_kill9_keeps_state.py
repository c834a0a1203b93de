"""`kill -9` the gateway (presence agent + registrar) and restart it on the same store and
ports: what phones hold stays valid.

* bob's binding is still listed by a query REGISTER (no Contact);
* bob's last SIP-ETag still refreshes with 200 (a new ETag, no 412);
* alice's subscription dialog keeps getting NOTIFYs: bob's next modify reaches her in the
  same dialog (same Call-ID and tags) with a CSeq above every NOTIFY before the crash.

Scripted UAs (loopback trusted, no digest). Addresses of record are in sip.test; Contacts
are the UAs' loopback addresses.
"""

import time
from pathlib import Path

import pytest

from harness import sipmsg
from harness.gateway import SipUser, running_agent_gateway

from harness.sip_ua import ScriptedUA

BOB = "sip:bob@sip.test"
ALICE = "sip:alice@sip.test"


@pytest.fixture
def agent_gateway(tmp_path: Path, diagnostics):
    with running_agent_gateway(
        tmp_path / "gateway", diagnostics, [SipUser("bob", "sip.test", "bobpw"), SipUser("alice", "sip.test", "alicepw")], trusted=["127.0.0.0/8"]
    ) as gw:
        yield gw


def register(ua: ScriptedUA, aor: str, call_id: str, cseq: int, *, contact: bool, expires: int = 600):
    extra = [("Expires", str(expires))] if contact else []
    req = sipmsg.build_request(
        "REGISTER",
        "sip:sip.test",
        via_host=ua.host,
        via_port=ua.port,
        from_uri=aor,
        from_tag=sipmsg.new_token("r"),
        to_uri=aor,
        to_tag=None,
        call_id=call_id,
        cseq=cseq,
        contact=ua.contact if contact else None,
        extra=extra,
    )
    return ua.transact(req, timeout=10)


def listed_contacts(resp) -> list[str]:
    return [sipmsg.uri_of(c) for v in resp.get_all("contact") for c in sipmsg.split_commas(v)]


def test_kill9_keeps_binding_etag_and_watcher_dialog(agent_gateway, make_ua):
    gw = agent_gateway
    bob = make_ua("bob", "bob", gw.contact_hostport)
    bob.aor = BOB
    alice = make_ua("alice", "alice", gw.contact_hostport)
    alice.aor = ALICE
    reg_call = sipmsg.new_token("reg-") + "@127.0.0.1"

    r = register(bob, BOB, reg_call, 1, contact=True)
    assert r.status == 200, r.summary()
    assert bob.contact in listed_contacts(r), f"200 does not list {bob.contact}: {r}"

    before = sipmsg.new_token("before-")
    p = bob.publish(BOB, sipmsg.pidf(BOB, before), expires=600)
    assert p.status == 200 and p.get("sip-etag"), p.summary()
    etag = p.get("sip-etag")

    sub = alice.subscribe(BOB, expires=600, accept="application/pidf+xml")
    assert sub.last_response.status in (200, 202), sub.last_response.summary()
    sub.wait_notify(lambda n: before in n.body, timeout=10, what=f"NOTIFY carrying {before}")
    cseq_before = max(n.cseq for n in sub.notifies)
    dialog = (sub.call_id, sub.from_tag, sub.to_tag)

    gw.kill9()
    gw.restart()

    q = register(bob, BOB, reg_call, 2, contact=False)
    assert q.status == 200, q.summary()
    assert bob.contact in listed_contacts(q), f"binding lost across kill -9: query 200 lists {listed_contacts(q)}"

    refreshed = bob.publish(BOB, b"", expires=600, etag=etag)
    assert refreshed.status == 200, f"stored ETag {etag} not refreshable after kill -9: {refreshed.summary()}"
    new_etag = refreshed.get("sip-etag")
    assert new_etag and new_etag != etag, refreshed.summary()

    after = sipmsg.new_token("after-")
    m = bob.publish(BOB, sipmsg.pidf(BOB, after), expires=600, etag=new_etag)
    assert m.status == 200, m.summary()
    n = sub.wait_notify(lambda n: after in n.body, timeout=10, what=f"NOTIFY carrying {after} after the restart")
    assert (sub.call_id, sub.from_tag, sub.to_tag) == dialog
    assert n.cseq > cseq_before, f"NOTIFY CSeq went back after the restart: {n.cseq} <= {cseq_before}"
    assert n.message.from_tag == dialog[2], n.message.summary()
