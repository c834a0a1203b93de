"""The embedded default, end to end, with peers nobody here wrote: a real baresip phone
registers and publishes at the gateway's own presence agent (digest, no Kamailio), and an
XMPP user (slixmpp, on Prosody and on ejabberd) and the phone see each other, with consent
both ways:

* bob's baresip subscribes to alice's SIP URI: the bridge asks alice (RFC 8048 §5.3), she
  approves, and the phone shows her Online;
* alice (XMPP) subscribes to bob's JID: the watcher rule of the agent keeps it pending
  (other domains wait) until an operator allows it (`POST /rules`); then alice gets
  `subscribed` and bob's published presence (the watcher is attached in-process), and
  follows his changes.
"""

import json
import time
import urllib.request
from pathlib import Path

import pytest

from harness.baresip import Baresip, Contact
from harness.bridge import BridgeGateway, xmpp_user_sip_uri
from harness.gateway import SipUser, presence_agent_toml
from harness.procs import LOOPBACK, free_port
from xmpp.fixtures import BOTH_SERVERS

DOMAIN = "sip.test"
BOB_URI = f"sip:bob@{DOMAIN}"
ALICE_URI = xmpp_user_sip_uri("alice")


def post_rule(gw: BridgeGateway, presentity: str, watcher: str, action: str) -> list:
    req = urllib.request.Request(
        gw.admin_url + "/rules",
        data=json.dumps({"presentity": presentity, "watcher": watcher, "action": action}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def watchers(gw: BridgeGateway) -> list:
    with urllib.request.urlopen(gw.admin_url + f"/watchers?presentity={BOB_URI}", timeout=10) as resp:
        return json.loads(resp.read())


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / 0.1) + 2):
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what} (last: {last!r})")


@pytest.fixture
def embedded_gateway(tmp_path: Path, diagnostics, xmpp_server):
    gw = BridgeGateway(
        tmp_path / "gateway",
        # Nothing in this test may reach an outbound proxy: a closed loopback port.
        f"sip:{LOOPBACK}:{free_port('udp')};transport=udp",
        xmpp_server,
        "notifier",
        sip_domain=DOMAIN,
        extra_toml=presence_agent_toml(
            domains=[DOMAIN],
            users=[SipUser("bob", DOMAIN, "bobpw")],
            other_domains="pending",
            algorithms=["MD5"],  # baresip 1.0 answers MD5-only challenges (interop/README.md)
        ),
        trusted=[],
    )
    diagnostics.files += [gw.log_path, gw.config_path]
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()


@BOTH_SERVERS
def test_xmpp_user_and_baresip_phone_see_each_other_with_consent_both_ways(
    xmpp_server, embedded_gateway, make_xmpp_client, tmp_path, diagnostics
):
    gw = embedded_gateway
    bob_jid = f"bob@{xmpp_server.component_domain}"
    alice = make_xmpp_client(xmpp_server, "alice", on_subscribe="manual")
    bob = Baresip(
        tmp_path / "bob",
        "bob",
        DOMAIN,
        "bobpw",
        gw.contact_hostport,
        pubint=600,
        contacts=[Contact("alice", ALICE_URI)],
    )
    diagnostics.files += [bob.log_path]
    with bob:
        bob.wait_registered(15)

        # SIP phone -> XMPP user: baresip subscribes about 1 s after start; the bridge asks
        # alice (pending at the phone), she approves, the phone sees her Online.
        alice.wait_subscription_request(from_=bob_jid, timeout=40)
        alice.subscribed(bob_jid)
        alice.send_available()
        bob.wait_contact_status(ALICE_URI, "Online", timeout=15)

        # XMPP -> SIP user: pending until the agent's rule allows alice.
        alice.subscribe(bob_jid)
        wait_until(
            lambda: [w for w in watchers(gw) if w["watcher"] == ALICE_URI and w["status"] == "pending"],
            10,
            "alice listed as a pending watcher of bob",
        )
        with pytest.raises(AssertionError):
            alice.wait_presence(from_=bob_jid, type="subscribed", timeout=1)
        post_rule(gw, BOB_URI, ALICE_URI, "allow")
        alice.wait_presence(from_=bob_jid, type="subscribed", timeout=10)
        alice.wait_presence(from_=bob_jid, type="available", timeout=10)

        # bob's own state changes reach alice through the agent (PUBLISH modify).
        bob.presence_offline()
        alice.wait_presence(from_=bob_jid, type="unavailable", timeout=10)
        bob.presence_online()
        alice.wait_presence(from_=bob_jid, type="available", timeout=10)
