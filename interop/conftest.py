"""Fixtures of the interop suite. Each test gets its own servers on free loopback ports, in
its own temporary directory; every server is stopped by its recorded PID at teardown, also
when the test fails, and their logs are printed when it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness.gateway import GatewayProcess
from harness.kamailio import KamailioPS, running
from harness.procs import stop_all_leftovers, tail
from harness.relay import SipRelay
from harness.sip_ua import ScriptedUA

# The XMPP servers, clients and stub component (interop/xmpp), and the bridge's gateway and
# Kamailio variants (harness/bridge.py), for every test of the suite.
pytest_plugins = ["xmpp.fixtures", "harness.bridge"]

# The presentity and watcher the scenarios use. Domains are IP literals: Kamailio sends
# NOTIFYs to Contact / domain, which must resolve to loopback (interop-notes.md).
ALICE = "sip:alice@127.0.0.1"
BOB = "sip:bob@127.0.0.1"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_sessionfinish(session, exitstatus):
    left = stop_all_leftovers()
    if left:
        print(f"\ninterop: stopped leftover processes by PID: {', '.join(left)}")


class Diagnostics:
    """Files and in-memory logs printed when a test fails."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.uas: list[ScriptedUA] = []


@pytest.fixture(autouse=True)
def diagnostics(request) -> Iterator[Diagnostics]:
    diag = Diagnostics()
    yield diag
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for f in diag.files:
            print(f"\n----- {f} (tail) -----\n{tail(f, 80)}")
        for ua in diag.uas:
            print(f"\n----- UA {ua.name} -----\n" + "\n".join(ua.log[-60:]))


@pytest.fixture
def kamailio(tmp_path: Path, diagnostics: Diagnostics) -> Iterator[KamailioPS]:
    """Kamailio presence server alone (its Contact is itself)."""
    with running(KamailioPS(tmp_path / "kamailio"), diagnostics) as ps:
        yield ps


@pytest.fixture
def relayed_kamailio(tmp_path: Path, diagnostics: Diagnostics) -> Iterator[tuple[KamailioPS, SipRelay]]:
    """Kamailio behind the capturing relay: the gateway's outbound proxy is the relay, and
    Kamailio's Contact is the relay too, so in-dialog requests are captured as well."""
    ps = KamailioPS(tmp_path / "kamailio")
    relay = SipRelay(ps.addr, tmp_path / "relay.log")
    ps.contact_port = relay.port
    diagnostics.files += [ps.log_path, relay.log_path]
    try:
        ps.start()
        yield ps, relay
    finally:
        ps.stop()
        relay.close()


@pytest.fixture
def gateway(tmp_path: Path, relayed_kamailio, diagnostics: Diagnostics) -> Iterator[GatewayProcess]:
    """The gateway binary, its outbound proxy the relay in front of Kamailio."""
    _, relay = relayed_kamailio
    gw = GatewayProcess(tmp_path / "gateway", relay.proxy_uri)
    diagnostics.files += [gw.log_path, gw.run_dir / "ctl.log"]
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def make_ua(diagnostics: Diagnostics) -> Iterator[Callable[..., ScriptedUA]]:
    """Creates scripted UAs whose next hop is a given presence server; all closed at teardown."""
    made: list[ScriptedUA] = []

    def make(name: str, user: str, next_hop: tuple[str, int]) -> ScriptedUA:
        ua = ScriptedUA(name, user, next_hop)
        made.append(ua)
        diagnostics.uas.append(ua)
        return ua

    try:
        yield make
    finally:
        for ua in made:
            ua.close()
