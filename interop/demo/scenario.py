"""The demo's two users, scripted: alice on XMPP (slixmpp, logged in at Prosody) and bob on
SIP (a small UA on loopback). Prints what crosses the gateway in each direction; exits 0 only
if both directions were seen.

  /usr/bin/python3 interop/demo/scenario.py --c2s PORT --gateway PORT --ctl BIN --admin URL
      The gateway is sip.test's presence server (embedded presence agent and registrar):
      bob REGISTERs, PUBLISHes and SUBSCRIBEs at the gateway; bob's consent for alice is a
      watcher rule set with "BIN ctl --admin URL rules set ...".
  /usr/bin/python3 interop/demo/scenario.py --c2s PORT --gateway PORT --kamailio PORT
      Kamailio is sip.test's presence server: bob PUBLISHes at Kamailio and SUBSCRIBEs at
      the gateway.

Every wait is bounded (WAIT seconds each); nothing here starts or stops a server.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional

# slixmpp warns at import that it uses the pure-Python stringprep: noise for the demo.
logging.basicConfig(level=logging.ERROR)

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from interop.harness import sipmsg  # noqa: E402
from interop.harness.sip_ua import Notify, ScriptedUA, Subscription  # noqa: E402
from interop.xmpp.client import ScriptedClient  # noqa: E402

LOOPBACK = "127.0.0.1"
WAIT = 10.0

ALICE_JID = "alice@xmpp.test"
ALICE_PASSWORD = "alicepw"
ALICE_SIP = "sip:alice@xmpp.test"  # alice as SIP users address her (scheme "domain")
BOB_SIP = "sip:bob@sip.test"
BOB_JID = "bob@sip.xmpp.test"  # bob as XMPP users address him

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
JABBER_NS = "jabber:client"


class DemoFailure(Exception):
    pass


def say(line: str = "") -> None:
    print(line, flush=True)


def ms_since(t0: float) -> str:
    return f"{(time.monotonic() - t0) * 1000:.0f} ms"


def bob_pidf_away(note: str) -> bytes:
    """What a SIP phone publishes for "away": PIDF with an RPID activity and a note."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="{PIDF_NS}" xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}" entity="{BOB_SIP}">
  <tuple id="desk-phone">
    <status><basic>open</basic></status>
    <contact>{BOB_SIP}</contact>
    <note>{note}</note>
  </tuple>
  <dm:person id="bob">
    <rpid:activities><rpid:away/></rpid:activities>
  </dm:person>
</presence>
""".encode()


def describe_pidf(body: str) -> dict[str, Optional[str]]:
    """basic / show / rpid activity / note of a PIDF body (first of each), for printing."""
    out: dict[str, Optional[str]] = {"basic": None, "show": None, "activity": None, "note": None}
    if not body.strip():
        return out
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return out
    for el in root.iter():
        ns, _, local = el.tag[1:].partition("}") if el.tag.startswith("{") else ("", "", el.tag)
        if ns == PIDF_NS and local == "basic" and out["basic"] is None:
            out["basic"] = (el.text or "").strip()
        elif ns == JABBER_NS and local == "show" and out["show"] is None:
            out["show"] = (el.text or "").strip()
        elif ns == RPID_NS and local == "activities" and out["activity"] is None:
            kids = [c.tag.rsplit("}", 1)[-1] for c in el]
            out["activity"] = ",".join(kids) or None
        elif local == "note" and out["note"] is None:
            out["note"] = (el.text or "").strip()
    return out


def notify_summary(n: Notify) -> str:
    d = describe_pidf(n.body)
    parts = [f"Subscription-State: {n.message.get('subscription-state')}"]
    if not n.body.strip():
        parts.append("no body")
    else:
        parts.append(f"basic={d['basic']}")
        if d["show"]:
            parts.append(f"show={d['show']}")
        if d["activity"]:
            parts.append(f"rpid={d['activity']}")
        if d["note"]:
            parts.append(f"note={d['note']!r}")
    return ", ".join(parts)


def wait_subscribed(alice: ScriptedClient, t0: float, by: str) -> None:
    try:
        alice.wait_presence(from_=BOB_JID, type="subscribed", timeout=WAIT)
    except AssertionError as e:
        raise DemoFailure(f"alice got no 'subscribed' from {BOB_JID}: the X2S subscription did not become active\n{e}")
    say(f"  {by}; alice (XMPP) is told 'subscribed' by {BOB_JID}  [{ms_since(t0)}]")


def bob_publishes_away(alice: ScriptedClient, bob: ScriptedUA, at: tuple[str, int], server: str) -> None:
    note = "Back in 10 minutes"
    bob.next_hop = at
    t1 = time.monotonic()
    resp = bob.publish(BOB_SIP, bob_pidf_away(note), expires=300, timeout=WAIT)
    if resp.status != 200:
        raise DemoFailure(f"{server} answered bob's PUBLISH with {resp.status} {resp.reason}")
    say(f"  bob (SIP) PUBLISHes away ('{note}') at {server} → {resp.status} {resp.reason}")
    try:
        got = alice.wait_presence(from_=BOB_JID, type="available", show="away", timeout=WAIT)
    except AssertionError as e:
        raise DemoFailure(f"alice never saw bob as away\n{e}")
    status = f", status '{got.status}'" if got.status else ""
    say(f"  alice (XMPP) sees bob away: <presence from='{got.from_}'> show=away{status}  [{ms_since(t1)}]")
    say(f"  ✔ bob (SIP) publishes away → alice (XMPP) sees bob away")
    say()


def sip_to_xmpp_kamailio(alice: ScriptedClient, bob: ScriptedUA, kamailio: tuple[str, int]) -> None:
    say("── Direction 1: SIP → XMPP ─────────────────────────────────────────────")
    t0 = time.monotonic()
    alice.subscribe(BOB_JID)
    say(f"  alice (XMPP) adds {BOB_JID} to her roster and asks to see his presence")
    say(f"      → the gateway SUBSCRIBEs to {BOB_SIP} at Kamailio (its outbound proxy)")
    wait_subscribed(alice, t0, "Kamailio NOTIFYs 'active'")
    bob_publishes_away(alice, bob, kamailio, "Kamailio")


class Ctl:
    """`xmpp-sip-gateway ctl` against the demo gateway's admin API, bounded in time."""

    def __init__(self, binary: str, admin: str) -> None:
        self.binary = binary
        self.admin = admin

    def __call__(self, *args: str) -> str:
        cmd = [self.binary, "ctl", "--admin", self.admin, "--timeout", str(int(WAIT)), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT + 5)
        except subprocess.TimeoutExpired:
            raise DemoFailure(f"ctl {' '.join(args)}: no answer within {WAIT + 5:.0f}s")
        if done.returncode != 0:
            raise DemoFailure(f"ctl {' '.join(args)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
        return done.stdout


def bob_registers(bob: ScriptedUA, gateway: tuple[str, int]) -> None:
    """A plain REGISTER (RFC 3261 §10.2), as a phone sends when it starts; from loopback
    (sip.trusted) the gateway's registrar takes it without a digest challenge."""
    bob.next_hop = gateway
    req = sipmsg.build_request(
        "REGISTER",
        "sip:sip.test",
        via_host=bob.host,
        via_port=bob.port,
        from_uri=BOB_SIP,
        from_tag=sipmsg.new_token("r"),
        to_uri=BOB_SIP,
        to_tag=None,
        call_id=sipmsg.new_token("reg-") + "@127.0.0.1",
        cseq=1,
        contact=bob.contact,
        extra=[("Expires", "600")],
    )
    resp = bob.transact(req, timeout=WAIT)
    if resp.status != 200:
        raise DemoFailure(f"the gateway answered bob's REGISTER with {resp.status} {resp.reason}")
    say(f"  bob (SIP) REGISTERs {bob.contact} for {BOB_SIP} at the gateway → {resp.status} {resp.reason}")


def wait_pending_watcher(alice: ScriptedClient, ctl: Ctl) -> dict:
    """Until `ctl watchers` (a JSON list) shows alice as a pending watcher of bob; fails at
    once if alice is refused instead."""
    deadline = time.monotonic() + WAIT
    out = ""
    for _ in range(int(WAIT / 0.1) + 1):  # bounded in count and time
        out = ctl("watchers", "--presentity", BOB_SIP)
        try:
            rows = json.loads(out)
        except ValueError:
            raise DemoFailure(f"ctl watchers did not answer JSON:\n{out}")
        for row in rows if isinstance(rows, list) else []:
            if row.get("watcher") == ALICE_SIP and row.get("event") == "presence" and row.get("status") == "pending":
                return row
        refused = [r for r in alice.inbox.history() if r.kind == "presence" and r.type == "unsubscribed" and r.bare_from == BOB_JID]
        if refused:
            raise DemoFailure(f"alice was refused: {BOB_JID} answered 'unsubscribed' (a deny rule or other_domains = \"deny\")")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise DemoFailure(f"ctl watchers never listed {ALICE_SIP} as a pending watcher of {BOB_SIP}; last answer:\n{out}")


def sip_to_xmpp_embedded(alice: ScriptedClient, bob: ScriptedUA, gateway: tuple[str, int], ctl: Ctl) -> None:
    say("── Direction 1: SIP → XMPP ─────────────────────────────────────────────")
    bob_registers(bob, gateway)
    t0 = time.monotonic()
    alice.subscribe(BOB_JID)
    say(f"  alice (XMPP) adds {BOB_JID} to her roster and asks to see his presence")
    say(f"      → the gateway's presence agent makes her a watcher of {BOB_SIP} (in-process)")
    row = wait_pending_watcher(alice, ctl)
    say(f"  she waits for bob's consent (other_domains = \"pending\")  [{ms_since(t0)}]")
    say(f"      $ xmpp-sip-gateway ctl watchers --presentity {BOB_SIP}")
    say("      " + ", ".join(f"{k}={row[k]}" for k in ("watcher", "event", "status", "via") if k in row))
    early = [r for r in alice.inbox.history() if r.kind == "presence" and r.type == "subscribed" and r.bare_from == BOB_JID]
    if early:
        raise DemoFailure(f"alice was told 'subscribed' by {BOB_JID} while her watcher was still pending")
    rule = ("rules", "set", "--presentity", BOB_SIP, "--watcher", ALICE_SIP, "--action", "allow")
    t1 = time.monotonic()
    ctl(*rule)
    say("  bob's consent, as a watcher rule:")
    say(f"      $ xmpp-sip-gateway ctl {' '.join(rule)}")
    wait_subscribed(alice, t1, "the rule allows her")
    bob_publishes_away(alice, bob, gateway, "the gateway")


# Per subscription dialog (Call-ID): how many of its NOTIFYs have been printed.
_printed: dict[str, int] = {}


def _position(sub: Subscription, n: Notify) -> int:
    return next(i for i, m in enumerate(sub.notifies) if m is n)


def follow(sub: Subscription, wanted: Callable[[Notify], bool], t0: float, what: str) -> Notify:
    """Prints every NOTIFY of `sub` not printed yet, as it arrives, until one is `wanted`."""
    deadline = time.monotonic() + WAIT
    for _ in range(100):  # bounded in count and time: each pass prints one NOTIFY
        left = deadline - time.monotonic()
        if left <= 0:
            break
        k = _printed.get(sub.call_id, 0)
        n = sub.wait_notify(lambda m: _position(sub, m) >= k, left, what)
        _printed[sub.call_id] = _position(sub, n) + 1
        say(f"  bob (SIP) gets NOTIFY: {notify_summary(n)}  [{ms_since(t0)}]")
        if wanted(n):
            return n
    raise AssertionError(f"no {what} within {WAIT:.0f}s")


def xmpp_to_sip(alice: ScriptedClient, bob: ScriptedUA, gateway: tuple[str, int]) -> None:
    say("── Direction 2: XMPP → SIP ─────────────────────────────────────────────")
    bob.next_hop = gateway
    t0 = time.monotonic()
    sub = bob.subscribe(ALICE_SIP, expires=600, timeout=WAIT)
    resp = sub.last_response
    if resp is None or resp.status is None or not 200 <= resp.status < 300:
        code = f"{resp.status} {resp.reason}" if resp is not None else "nothing"
        raise DemoFailure(f"the gateway answered bob's SUBSCRIBE to {ALICE_SIP} with {code}")
    say(f"  bob (SIP) SUBSCRIBEs to {ALICE_SIP} at the gateway → {resp.status} {resp.reason}")
    try:
        follow(sub, lambda n: True, t0, "first NOTIFY")
    except AssertionError as e:
        raise DemoFailure(f"the gateway sent bob no NOTIFY after accepting his SUBSCRIBE\n{e}")

    try:
        alice.wait_subscription_request(from_=BOB_JID, timeout=WAIT)
    except AssertionError as e:
        raise DemoFailure(f"alice was never asked to approve {BOB_JID}\n{e}")
    say(f"  alice (XMPP) is asked: {BOB_JID} wants to see your presence  [{ms_since(t0)}]")
    t1 = time.monotonic()
    alice.subscribed(BOB_JID)
    say("  alice (XMPP) approves")
    try:
        # Prosody sends alice's current presence to bob once she approves (RFC 6121 §3.1.5):
        # the gateway NOTIFYs "active" at once, then "open" when that presence arrives.
        follow(sub, lambda n: n.state == "active" and describe_pidf(n.body)["basic"] == "open", t1,
               "NOTIFY with Subscription-State active and alice open")
    except AssertionError as e:
        raise DemoFailure(f"bob's subscription never became active after alice approved\n{e}")

    t2 = time.monotonic()
    alice.send_available(show="dnd", status="In a meeting")
    say("  alice (XMPP) goes dnd 'In a meeting'")

    def is_meeting(n: Notify) -> bool:
        d = describe_pidf(n.body)
        return n.state == "active" and d["show"] == "dnd" and d["note"] == "In a meeting"

    try:
        follow(sub, is_meeting, t2, "NOTIFY with show dnd and note 'In a meeting'")
    except AssertionError as e:
        raise DemoFailure(f"bob never got alice's dnd 'In a meeting'\n{e}")
    say("  ✔ alice (XMPP) goes dnd 'In a meeting' → bob (SIP) gets NOTIFY: dnd, In a meeting")
    say()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--c2s", type=int, required=True, help="Prosody's c2s port")
    ap.add_argument("--gateway", type=int, required=True, help="the gateway's SIP port")
    ap.add_argument("--kamailio", type=int, help="Kamailio's SIP port (Kamailio serves sip.test)")
    ap.add_argument("--ctl", help="the gateway binary, for ctl (the gateway serves sip.test)")
    ap.add_argument("--admin", help="the gateway's admin API URL, for ctl")
    args = ap.parse_args(argv)
    if (args.kamailio is None) == (args.ctl is None or args.admin is None):
        ap.error("give either --kamailio PORT, or --ctl BIN and --admin URL")
    gateway = (LOOPBACK, args.gateway)
    kamailio = (LOOPBACK, args.kamailio) if args.kamailio is not None else None

    alice = ScriptedClient(ALICE_JID, ALICE_PASSWORD, (LOOPBACK, args.c2s), resource="laptop")
    bob = ScriptedUA("bob", "bob", next_hop=kamailio or gateway)
    # bob's address of record is in the SIP domain the gateway bridges; his Contact stays
    # 127.0.0.1:<port> so NOTIFYs reach this script.
    bob.aor = BOB_SIP
    done = []
    try:
        alice.start(timeout=WAIT)
        say(f"alice signed in at Prosody as {alice.full}; bob's SIP phone is {BOB_SIP} at {bob.contact}")
        say()
        if kamailio is not None:
            sip_to_xmpp_kamailio(alice, bob, kamailio)
        else:
            sip_to_xmpp_embedded(alice, bob, gateway, Ctl(args.ctl, args.admin))
        done.append("SIP → XMPP")
        xmpp_to_sip(alice, bob, gateway)
        done.append("XMPP → SIP")
    except DemoFailure as e:
        say()
        say(f"DEMO FAILED after {len(done)} of 2 directions ({', '.join(done) or 'none'} seen): {e}")
        if bob.log:
            say("  bob's SIP trace (last 15):")
            for line in bob.log[-15:]:
                say(f"    {line}")
        return 1
    except Exception as e:  # noqa: BLE001 - a harness error is still a failed demo
        say(f"DEMO FAILED: {type(e).__name__}: {e}")
        return 1
    finally:
        bob.close()
        alice.stop()
    say("Presence crossed the gateway in both directions.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
