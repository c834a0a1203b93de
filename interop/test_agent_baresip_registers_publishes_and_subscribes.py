"""Two real baresip softphones (Debian 12 baresip-core 1.0.0) against the gateway's embedded
presence agent and registrar, with digest auth for everyone (`trusted = []`):

* bob and alice REGISTER (401 challenge -> 200);
* each PUBLISHes its own state (pubint): basic open after registering;
* each SUBSCRIBEs to the other (contacts with ;presence=p2p) and sees "Online" — alice's
  baresip received a NOTIFY whose PIDF is bob's (entity sip:bob@sip.test, basic open);
* bob goes offline (presence_offline -> PUBLISH with SIP-If-Match, basic closed) -> alice
  sees "Offline"; online again -> "Online".

baresip 1.0.0 (libre 1.1.0) answers digest challenges ONLY when every WWW-Authenticate in
the 401 is MD5: a single SHA-256 challenge anywhere in the 401 makes it give up with
"Register: Function not implemented" (libre src/sip/auth.c: ENOSYS for a non-MD5
algorithm). The gateway is therefore configured with `[auth] algorithms = ["MD5"]` here,
as gateway.toml advises for such phones.
"""

from pathlib import Path

import pytest

from harness.baresip import Baresip, Contact
from harness.gateway import SipUser, running_agent_gateway


BOB = "sip:bob@sip.test"
ALICE = "sip:alice@sip.test"


@pytest.fixture
def agent_gateway(tmp_path: Path, diagnostics):
    with running_agent_gateway(
        tmp_path / "gateway", diagnostics, [SipUser("bob", "sip.test", "bobpw"), SipUser("alice", "sip.test", "alicepw")], trusted=[],
        algorithms=["MD5"],
    ) as gw:
        yield gw


@pytest.fixture
def phones(tmp_path: Path, agent_gateway, diagnostics):
    gw = agent_gateway.contact_hostport
    bob = Baresip(tmp_path / "bob", "bob", "sip.test", "bobpw", gw, pubint=600, contacts=[Contact("alice", ALICE)])
    alice = Baresip(tmp_path / "alice", "alice", "sip.test", "alicepw", gw, pubint=600, contacts=[Contact("bob", BOB)])
    diagnostics.files += [bob.log_path, alice.log_path]
    try:
        bob.start()
        alice.start()
        yield bob, alice
    finally:
        alice.stop()
        bob.stop()


def _registered(phone: Baresip, timeout: float) -> None:
    try:
        phone.wait_registered(timeout)
    except AssertionError as e:
        if "Function not implemented" in phone.log_text():
            raise AssertionError(
                f"{phone.name} could not answer the gateway's digest challenge: baresip 1.0.0 "
                "gives up when the 401 carries any non-MD5 WWW-Authenticate (SHA-256 offered?). "
                "See interop/README.md, baresip.\n" + str(e)
            ) from e
        raise


def test_baresip_registers_publishes_and_subscribes(phones):
    bob, alice = phones
    _registered(bob, 15)
    _registered(alice, 15)

    # Each sees the other Online: SUBSCRIBE (digest) -> 200 -> NOTIFY with the composed PIDF.
    # baresip subscribes 1 s after start and retries a failed SUBSCRIBE only after 30 s.
    alice.wait_contact_status(BOB, "Online", timeout=20)
    bob.wait_contact_status(ALICE, "Online", timeout=20)
    notifies = [n for n in alice.received_requests("NOTIFY") if "<basic>open</basic>" in n]
    assert notifies, "alice's baresip shows bob Online but logged no NOTIFY with basic open:\n" + alice.log_tail(80)
    assert any('entity="sip:bob@sip.test"' in n or "entity='sip:bob@sip.test'" in n for n in notifies), (
        "no NOTIFY to alice carries a PIDF for entity sip:bob@sip.test:\n" + notifies[-1]
    )

    # bob's own state changes reach alice (PUBLISH modify with SIP-If-Match -> NOTIFY).
    bob.presence_offline()
    alice.wait_contact_status(BOB, "Offline", timeout=10)
    bob.presence_online()
    alice.wait_contact_status(BOB, "Online", timeout=10)

    # What bob sent: every PUBLISH after the first carried SIP-If-Match (no new publication
    # per change), and the gateway never answered 412 to any of them.
    publishes = bob.sent_requests("PUBLISH")
    assert any("SIP-If-Match:" in p for p in publishes), "bob never sent a conditional PUBLISH:\n" + bob.log_tail(80)
    assert "412 Conditional Request Failed" not in bob.log_text(), bob.log_tail(120)
