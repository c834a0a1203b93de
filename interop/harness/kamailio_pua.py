"""Kamailio 5.6 as a PUBLISH client (EPA) of the gateway: interop/kamailio/pua_client.cfg with
pua + pua_rpc, driven by JSON-RPC over HTTP (jsonrpcs + xhttp) on its own loopback TCP port,
and kamcmd on its own ctl socket for everything that needs no delayed reply.

Facts (5.6.3, checked against interop/tools/sip_stub_registrar.py; interop/README.md,
"Kamailio as a PUBLISH client"):

* `kamcmd -s unix:SOCK pua.publish …` and `… pua.send_publish …` both fail with
  "error: 600 - Reply wait/async mode not supported by this rpc transport" and send nothing;
  jsonrpcs has delayed replies only over HTTP. So `publish()` POSTs JSON-RPC to /RPC.
* pua.publish params: presentity, expires, event, content type, id, etag, outbound proxy,
  extra headers, body ("." = none; content type "." = no body).
* The PUBLISH carries Expires = requested + 1 (3600 -> 3601), a new Call-ID each time, no
  Contact, no Route; Request-URI, From and To are the presentity. A second publish for the
  same presentity (and id) without an etag is sent as a modify with SIP-If-Match of the
  ETag pua holds; passing the etag with content type "." is a bodyless refresh.
* pua.publish with expires 0 sends the removal (answered 200) but never answers the RPC
  ("publ_cback_func(): no SIP-ETag header field found"); `unpublish()` therefore returns
  after a short bounded wait without a result.
* pua cannot answer a digest challenge: the gateway must trust its loopback address.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from .kamailio import INTEROP_DIR, answers_options, create_presence_db, kamailio_binary
from .procs import LOOPBACK, ManagedProcess, free_port, tail

CFG = INTEROP_DIR / "kamailio" / "pua_client.cfg"


class RpcError(AssertionError):
    pass


class KamailioPua:
    def __init__(self, run_dir: Path, gateway: tuple[str, int]) -> None:
        self.run_dir = run_dir
        self.gateway = gateway
        self.port = free_port("udp")
        self.http_port = free_port("tcp")
        self.db_path = run_dir / "kamailio-pua.sqlite"
        self.log_path = run_dir / "kamailio-pua.log"
        # sun_path is at most 108 bytes: pytest's tmp paths can be longer.
        sock = run_dir / "ctl.sock"
        if len(str(sock)) > 100:
            sock = Path(tempfile.mkdtemp(prefix="kpua-")) / "ctl.sock"
        self.ctl_sock = sock
        self.proc: Optional[ManagedProcess] = None

    @property
    def proxy_uri(self) -> str:
        return f"sip:{self.gateway[0]}:{self.gateway[1]};transport=udp"

    def start(self, ready_timeout: float = 15.0) -> "KamailioPua":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        create_presence_db(self.db_path)  # the `pua` table is in presence-create.sql
        rundir = self.run_dir / "kamailio-pua-rundir"
        rundir.mkdir(exist_ok=True)
        argv = [
            kamailio_binary(),
            "-f", str(CFG),
            "-DD", "-E",
            "-l", f"udp:{LOOPBACK}:{self.port}",
            "-l", f"tcp:{LOOPBACK}:{self.http_port}",
            "-n", "1",
            "-m", "64",
            "-Y", str(rundir),
            f"--substdef=!KAM_PORT!{self.port}!",
            f"--substdef=!GW_PROXY!{self.proxy_uri}!",
            f"--substdef=!CTL_SOCK!{self.ctl_sock}!",
            f"--substdef=!DB_FILE!{self.db_path}!",
        ]  # fmt: skip
        self.proc = ManagedProcess("kamailio-pua", argv, self.log_path, cwd=self.run_dir).start()

        def still_running() -> None:
            if not self.proc.alive():
                raise RuntimeError(
                    f"kamailio-pua exited with {self.proc.proc.returncode} during start:\n" + tail(self.log_path)
                )

        if not answers_options(self.port, ready_timeout, still_running):
            raise RuntimeError(f"kamailio-pua on {self.port} not answering OPTIONS:\n" + tail(self.log_path))
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=5.0)

    # ---- RPC -----------------------------------------------------------------------------

    def rpc(self, method: str, params: list[Any], timeout: float = 15.0) -> Any:
        """JSON-RPC 2.0 over HTTP; returns `result`, raises RpcError on `error`."""
        req = urllib.request.Request(
            f"http://{LOOPBACK}:{self.http_port}/RPC",
            data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with open(self.run_dir / "rpc.log", "a") as log:
            log.write(f"-> {method} {params}\n")
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    text = r.read().decode("utf-8", errors="replace")
            except (urllib.error.URLError, socket.timeout, TimeoutError) as e:
                log.write(f"<- no answer: {e}\n")
                raise RpcError(f"kamailio-pua: {method} got no JSON-RPC answer within {timeout:.0f}s: {e}") from e
            log.write(f"<- {text}\n")
        data = json.loads(text)
        if "error" in data:
            raise RpcError(f"kamailio-pua: {method} failed: {data['error']}")
        return data.get("result")

    def publish(
        self,
        presentity: str,
        body: bytes,
        *,
        expires: int = 3600,
        event: str = "presence",
        content_type: str = "application/pidf+xml",
        etag: Optional[str] = None,
        pres_id: Optional[str] = None,
        timeout: float = 15.0,
    ) -> dict:
        """pua.publish; waits for the gateway's final response. Returns {"SIP-ETag", "Expires"}
        on 200; raises RpcError with the SIP code otherwise."""
        params = [
            presentity,
            str(expires),
            event,
            content_type if body else ".",
            pres_id or ".",
            etag or ".",
            ".",  # outbound proxy: the module's (the gateway)
            ".",  # extra headers
        ]
        if body:
            params.append(body.decode("utf-8"))
        return self.rpc("pua.publish", params, timeout=timeout)

    def kamcmd(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """kamcmd on this instance's ctl socket (binrpc): fine for commands without delayed
        replies (core.uptime, pua.subscribe …), not for pua.publish (see module doc)."""
        argv = ["kamcmd", "-s", f"unix:{self.ctl_sock}", *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        with open(self.run_dir / "kamcmd.log", "a") as log:
            log.write(f"$ {' '.join(argv)}\nrc={p.returncode}\n{p.stdout}{p.stderr}\n")
        return p
