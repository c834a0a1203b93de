"""The gateway binary under test: configuration, start, crash (kill -9), restart, and its
`ctl` command-line client.

Everything that depends on the gateway's configuration keys or CLI spelling is in
`gateway_config_toml` and `GatewayProcess.ctl_*` so it can be adjusted in one place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from .procs import LOOPBACK, ManagedProcess, free_port, tail

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
BIN_NAME = "xmpp-sip-gateway"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SIP_LISTEN = re.compile(r"sip listening\b.*?\btransport=(\w+)\b.*?\baddr=([0-9.]+):(\d+)")
_ADMIN_LISTEN = re.compile(r"admin listening\b.*?\baddr=([0-9.]+):(\d+)")


def gateway_binary() -> Path:
    """XSG_BIN, else <cargo target dir>/debug/xmpp-sip-gateway.

    The target dir is CARGO_TARGET_DIR if set, else what `cargo metadata` reports, else
    <repo>/target.
    """
    env_bin = os.environ.get("XSG_BIN")
    if env_bin:
        return Path(env_bin).resolve()
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target and shutil.which("cargo"):
        try:
            out = subprocess.run(
                ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if out.returncode == 0:
                target = json.loads(out.stdout).get("target_directory")
        except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
            target = None
    base = Path(target) if target else REPO_ROOT / "target"
    if not base.is_absolute():
        base = REPO_ROOT / base
    return base / "debug" / BIN_NAME


@dataclass
class GatewayPorts:
    sip: int
    admin: int


def gateway_config_toml(
    *,
    ports: GatewayPorts,
    outbound_proxy: str,
    store_path: Path,
    log_level: str = "info",
    extra: str = "",
    trusted: Optional[list[str]] = None,
) -> str:
    """The gateway configuration the suite runs with. The ONE place that knows its keys.

    `extra` is appended as is: further tables such as `[xmpp]` and `[bridge]`
    (harness/bridge.py writes those) or `[presence_agent]`/`[registrar]`/`[auth]`
    (`presence_agent_toml`). `trusted` is `[sip] trusted` (default: all of loopback; `[]`
    makes every phone pass digest auth)."""
    trusted_list = ["127.0.0.0/8"] if trusted is None else trusted
    return f"""# written by interop/harness/gateway.py
[log]
level = "{log_level}"

[sip]
udp_listen = "{LOOPBACK}:{ports.sip}"
tcp_listen = "{LOOPBACK}:{ports.sip}"
outbound_proxy = "{outbound_proxy}"
trusted = {json.dumps(trusted_list)}

[store]
path = "{store_path}"

[admin]
listen = "{LOOPBACK}:{ports.admin}"

[pua]
# Short, so that publications without a time limit (ctl publish --expires -1) are
# refreshed within a test's time.
default_expires = 30
""" + (f"\n{extra}" if extra else "")


@dataclass
class SipUser:
    username: str
    domain: str
    password: str


def presence_agent_toml(
    *,
    domains: list[str],
    users: list[SipUser],
    min_expires: int = 60,
    max_expires: int = 3600,
    same_domain: str = "allow",
    other_domains: str = "pending",
    registrar_min_expires: int = 60,
    registrar_max_expires: int = 3600,
    realm: str = "sip.test",
    nonce_lifetime_secs: int = 300,
    algorithms: list[str] | None = None,
    registrar_enabled: bool = True,
) -> str:
    """The embedded presence agent + registrar + digest users (`[presence_agent]`,
    `[registrar]`, `[auth]`, `[[auth.users]]`), for `extra_toml`.

    `registrar_enabled=False` writes `[registrar] enabled = false`: the agent serves the
    domains' presence while another registrar (Kamailio) holds their bindings, which reach
    the gateway as REGISTER copies or `reg` events (`registrations_toml`)."""
    if registrar_enabled:
        registrar = f"""
[registrar]
min_expires = {registrar_min_expires}
max_expires = {registrar_max_expires}
"""
    else:
        registrar = """
[registrar]
enabled = false
"""
    out = f"""
[presence_agent]
domains = {json.dumps(domains)}
min_expires = {min_expires}
max_expires = {max_expires}
same_domain = "{same_domain}"
other_domains = "{other_domains}"
{registrar}
[auth]
realm = "{realm}"
nonce_lifetime_secs = {nonce_lifetime_secs}
"""
    if algorithms is not None:
        out += f"algorithms = {json.dumps(algorithms)}\n"
    for u in users:
        out += f"""
[[auth.users]]
username = "{u.username}"
domain = "{u.domain}"
password = "{u.password}"
"""
    return out



def _toml_opt(key: str, value: object) -> str:
    """`key = value` (TOML via JSON literals) or nothing when `value` is None."""
    return "" if value is None else f"{key} = {json.dumps(value)}\n"


def registrations_toml(
    *,
    copy_domains: Optional[list[str]] = None,
    copy_max_expires: Optional[int] = None,
    publish_mark: Optional[str] = None,
    reg_event_aors: Optional[list[str]] = None,
    reg_event_expires: Optional[int] = None,
    reg_event_server: Optional[str] = None,
    reg_event_watcher: Optional[str] = None,
) -> str:
    """`[registrations]`: sources of bindings besides the embedded registrar. REGISTER
    copies (Kamailio `t_replicate`) for `copy_domains`, accepted from `[sip] trusted` peers
    only; `reg` event subscriptions (RFC 3680) for `reg_event_aors`, sent to
    `reg_event_server` (a SIP URI with a numeric host). Keys left None are not written."""
    return "\n[registrations]\n" + "".join(
        _toml_opt(k, v)
        for k, v in (
            ("copy_domains", copy_domains),
            ("copy_max_expires", copy_max_expires),
            ("publish_mark", publish_mark),
            ("reg_event_aors", reg_event_aors),
            ("reg_event_expires", reg_event_expires),
            ("reg_event_server", reg_event_server),
            ("reg_event_watcher", reg_event_watcher),
        )
    )


def usrloc_toml(
    *,
    domains: Optional[list[str]] = None,
    aors: Optional[list[str]] = None,
    patterns: Optional[list[str]] = None,
    closed_linger_secs: Optional[int] = None,
    entity_prefix: Optional[str] = None,
    default_domain: Optional[str] = None,
) -> str:
    """`[usrloc]`: REGISTER-driven presence (one `open` tuple per live binding; `closed`
    when the last one goes, removed after `closed_linger_secs`)."""
    return "\n[usrloc]\n" + "".join(
        _toml_opt(k, v)
        for k, v in (
            ("domains", domains),
            ("aors", aors),
            ("patterns", patterns),
            ("closed_linger_secs", closed_linger_secs),
            ("entity_prefix", entity_prefix),
            ("default_domain", default_domain),
        )
    )


def bla_toml(lines: list[str]) -> str:
    """`[bla]`: the shared-line AORs whose registered phones the gateway SUBSCRIBEs
    (`dialog;sla`) and whose dialog state it publishes for the line."""
    return f"\n[bla]\nlines = {json.dumps(lines)}\n"


@dataclass
class CtlResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"ctl printed no JSON ({e}): {self.describe()}") from e

    def describe(self) -> str:
        return (
            f"`{' '.join(self.argv)}` exited {self.returncode}\n"
            f"stdout: {self.stdout.strip()[:2000]}\nstderr: {self.stderr.strip()[:2000]}"
        )


class GatewayProcess:
    """One gateway instance; its ports and store survive restarts."""

    def __init__(
        self,
        run_dir: Path,
        outbound_proxy: str,
        extra_toml: str = "",
        *,
        trusted: Optional[list[str]] = None,
        log_level: str = "info",
    ) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.binary = gateway_binary()
        self.ports = GatewayPorts(sip=free_port("udp+tcp"), admin=free_port("tcp"))
        self.store_path = run_dir / "gateway-store.sqlite"
        self.config_path = run_dir / "gateway.toml"
        self.log_path = run_dir / "gateway.log"
        self.config_path.write_text(
            gateway_config_toml(
                ports=self.ports,
                outbound_proxy=outbound_proxy,
                store_path=self.store_path,
                extra=extra_toml,
                trusted=trusted,
                log_level=log_level,
            )
        )
        self.proc: Optional[ManagedProcess] = None
        self.starts = 0
        # What the gateway's log said it bound, per start.
        self.bound_sip: dict[str, tuple[str, int]] = {}
        self.bound_admin: Optional[tuple[str, int]] = None

    @property
    def admin_url(self) -> str:
        host, port = self.bound_admin or (LOOPBACK, self.ports.admin)
        return f"http://{host}:{port}"

    @property
    def contact_hostport(self) -> tuple[str, int]:
        return self.bound_sip.get("udp", (LOOPBACK, self.ports.sip))

    def start(self, ready_timeout: float = 30.0) -> "GatewayProcess":
        if not self.binary.exists():
            raise RuntimeError(
                f"gateway binary {self.binary} not found: run `cargo build` first "
                "(or set XSG_BIN / CARGO_TARGET_DIR)"
            )
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ)
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_BACKTRACE", "1")
        argv = [str(self.binary), "--config", str(self.config_path)]
        self.proc = ManagedProcess("xmpp-sip-gateway", argv, self.log_path, cwd=self.run_dir, env=env).start()
        self.starts += 1
        self._wait_ready(log_offset, ready_timeout)
        return self

    def _wait_ready(self, log_offset: int, timeout: float) -> None:
        """Reads the log of this start until both the SIP/UDP and admin listeners are logged."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 1):
            text = self._log_since(log_offset)
            for m in _SIP_LISTEN.finditer(text):
                self.bound_sip[m.group(1).lower()] = (m.group(2), int(m.group(3)))
            am = _ADMIN_LISTEN.search(text)
            if am:
                self.bound_admin = (am.group(1), int(am.group(2)))
            if "udp" in self.bound_sip and self.bound_admin:
                return
            if not self.proc.alive():
                raise RuntimeError(
                    f"gateway exited with {self.proc.proc.returncode} during start:\n" + tail(self.log_path)
                )
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError(
            "gateway did not log 'sip listening transport=udp addr=…' and 'admin listening addr=…' "
            f"within {timeout:.0f}s:\n" + tail(self.log_path)
        )

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return _ANSI.sub("", f.read().decode("utf-8", errors="replace"))
        except OSError:
            return ""

    def kill9(self) -> None:
        """A crash: SIGKILL to the recorded PID, no chance to unsubscribe or unpublish."""
        assert self.proc and self.proc.alive(), "gateway is not running"
        self.proc.kill9()

    def restart(self) -> "GatewayProcess":
        """Same binary, config, ports and store."""
        return self.start()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=5.0)

    # ---- admin HTTP API (read-only views) --------------------------------------------------

    def admin_get(self, path: str, timeout: float = 10.0) -> Any:
        """GET `path` of the admin API; the decoded JSON (AssertionError on a non-200)."""
        url = self.admin_url + path
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"GET {url}: HTTP {e.code}: {e.read()[:500]!r}") from e

    def _admin_list(self, path: str, key: str) -> list[dict]:
        data = self.admin_get(path)
        if isinstance(data, dict) and isinstance(data.get(key), list):
            data = data[key]
        assert isinstance(data, list), f"GET {path} returned no JSON list: {data!r}"
        return data

    def bindings(self, aor: Optional[str] = None) -> list[dict]:
        """`GET /bindings[?aor=]`: every live binding of every source (`source`:
        registrar, copy or reg_event; `expires_in` in seconds)."""
        path = "/bindings" + (f"?aor={urllib.parse.quote(aor, safe='')}" if aor else "")
        return self._admin_list(path, "bindings")

    def usrloc(self) -> list[dict]:
        """`GET /usrloc`: the AORs usrloc publishes (aor, state open|closed, contacts,
        marked, removed_in)."""
        return self._admin_list("/usrloc", "usrloc")

    def bla(self) -> list[dict]:
        """`GET /bla`: the shared lines with their phones (contact, subscription state,
        dialogs, version)."""
        return self._admin_list("/bla", "bla")

    # ---- ctl -----------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 40.0) -> CtlResult:
        argv = [str(self.binary), "ctl", "--admin", self.admin_url, *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from e
        res = CtlResult(argv, p.returncode, p.stdout, p.stderr)
        with open(self.run_dir / "ctl.log", "a") as f:
            f.write(res.describe() + "\n\n")
        return res

    def ctl_publish(
        self,
        presentity: str,
        body: bytes,
        *,
        expires: int,
        event: str = "presence",
        content_type: str = "application/pidf+xml",
    ) -> CtlResult:
        body_file = self.run_dir / f"publish-{int(time.time() * 1000)}.xml"
        body_file.write_bytes(body)
        return self.ctl(
            "publish",
            "--presentity", presentity,
            "--event", event,
            "--expires", str(expires),
            "--content-type", content_type,
            "--body-file", str(body_file),
        )  # fmt: skip

    def ctl_subscribe(self, presentity: str, watcher: str, *, expires: int, event: str = "presence") -> CtlResult:
        return self.ctl(
            "subscribe",
            "--presentity", presentity,
            "--watcher", watcher,
            "--event", event,
            "--expires", str(expires),
        )  # fmt: skip

    def list_publications(self) -> list[dict]:
        return self._list("publications")

    def list_subscriptions(self) -> list[dict]:
        return self._list("subscriptions")

    def _list(self, what: str) -> list[dict]:
        res = self.ctl("list", what)
        assert res.returncode == 0, res.describe()
        data = res.json()
        # Accept a bare JSON list or an object wrapping it under the listed name.
        if isinstance(data, dict) and isinstance(data.get(what), list):
            data = data[what]
        assert isinstance(data, list), f"`ctl list {what}` printed no JSON list: {res.describe()}"
        return data


def outcome_code(res: CtlResult) -> Optional[int]:
    """The SIP code in a ctl publish/subscribe outcome (`{"code": 200, ...}`), if printed."""
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("code"), int):
        return data["code"]
    return None


@contextlib.contextmanager
def running_agent_gateway(
    run_dir: Path, diagnostics, users: list[SipUser], *, trusted: Optional[list[str]], **agent
) -> Iterator[GatewayProcess]:
    """A started gateway whose embedded presence agent and registrar serve sip.test
    (`presence_agent_toml(**agent)`), its outbound proxy a closed loopback port that no
    agent test may reach; its log and config go to `diagnostics`; stopped by PID on exit."""
    gw = GatewayProcess(
        run_dir,
        f"sip:{LOOPBACK}:{free_port('udp')};transport=udp",
        extra_toml=presence_agent_toml(domains=["sip.test"], users=users, **agent),
        trusted=trusted,
    )
    diagnostics.files += [gw.log_path, gw.config_path]
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
