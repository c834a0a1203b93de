"""Prosody 0.12 and ejabberd 23.01 run for tests: loopback only, free ports, a fresh data
folder per instance, one XEP-0114 component listener for a given component domain and
secret, users registered with the servers' own tools.

Every process started here is recorded by PID (module table `_LIVE`), runs in its own
session (its process group id is its PID) and is stopped by that PID: SIGTERM, a bounded
wait, then SIGKILL of its process group. `stop_all()` is the session-end safety net. Nothing
is ever killed by name.

ejabberd is isolated from the system service as follows (no file outside the instance's
folder is read or written, no epmd is started, the system node `ejabberd@localhost` and its
cookie are never touched):

* `erl` is run directly (not `ejabberdctl`, which would `su` to the `ejabberd` user and use
  /var/lib/ejabberd): `-sname xi<random>@localhost -setcookie <random>`, HOME = the instance
  folder, EJABBERD_CONFIG_PATH / EJABBERD_LOG_PATH / ERL_INETRC / ERL_CRASH_DUMP inside it,
  mnesia dir = `<folder>/spool`.
* Erlang distribution without epmd: `-start_epmd false -erl_epmd_port <free port>` (OTP 23+),
  bound to 127.0.0.1 (`-kernel inet_dist_use_interface {127,0,0,1}`).
* Control commands (`register`, `status`, ...) run the same way `ejabberdctl` does:
  `erl -sname ctl... -hidden -noinput -dist_listen false -erl_epmd_port <port> -setcookie ...
  -s ejabberd_ctl -extra <node> <command> <args>`. See `EjabberdServer.ctl`.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

LOOPBACK = "127.0.0.1"
USER_DOMAIN = "xmpp.test"
COMPONENT_DOMAIN = "sip.xmpp.test"
DEFAULT_SECRET = "component-secret"

# PID -> process, for everything started and not yet stopped (safety net).
_LIVE: dict[int, "ManagedProcess"] = {}


class ServerError(RuntimeError):
    """A server did not start, stop or answer as expected; the message carries its log tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (closed before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Polls `predicate` until truthy; bounded in time and in count. Raises ServerError."""
    deadline = time.monotonic() + timeout
    last: object = None
    for _ in range(int(timeout / interval) + 2):
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise ServerError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def package_version(pkg: str) -> str:
    """The installed Debian version (`prosody --version` would start a server)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10
    )
    if out.returncode != 0:
        raise ServerError(f"package {pkg} is not installed; run interop/xmpp/setup.sh")
    return out.stdout.strip()


class ManagedProcess:
    """A child process in its own session, recorded by PID and stopped by that PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, cwd: Path, env: dict[str, str]):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            raise ServerError(f"{self.name} already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted server keeps one log across its lives.
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== harness: starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.cwd),
                env=self.env,
                start_new_session=True,
            )
        _LIVE[self.proc.pid] = self

    def stop(self, timeout: float = 10.0, hard: bool = False) -> Optional[int]:
        """SIGTERM (SIGKILL if `hard`) to the recorded PID, bounded wait, then SIGKILL to its
        process group (children such as erl_child_setup). Returns the exit code."""
        if self.proc is None:
            return None
        pid = self.proc.pid
        try:
            if self.proc.poll() is None:
                try:
                    os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            # The group id is the recorded PID (start_new_session); this reaches children the
            # main process left behind, and the main process itself if it ignored SIGTERM.
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired as e:
                raise ServerError(f"{self.name} (pid {pid}) survived SIGKILL") from e
            return self.proc.returncode
        finally:
            _LIVE.pop(pid, None)


def stop_all() -> list[str]:
    """Stops every process still recorded (safety net at session end). Returns 'name(pid)'s."""
    stopped = []
    for pid, p in list(_LIVE.items()):
        try:
            p.stop(timeout=5)
        finally:
            stopped.append(f"{p.name}({pid})")
    return stopped


class XmppServer:
    """Common shape of a test XMPP server.

    Attributes set at construction (stable across `restart()`): `domain` (users' domain),
    `component_domain`, `component_secret`, `c2s_port`, `component_port`, `workdir`,
    `log_path`. `start()` waits (bounded) until both ports accept connections.
    """

    kind = "?"

    def __init__(
        self,
        workdir: Path,
        *,
        domain: str = USER_DOMAIN,
        component_domain: str = COMPONENT_DOMAIN,
        component_secret: str = DEFAULT_SECRET,
        debug_log: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise ServerError(f"{self.workdir} is not empty: every server starts from a fresh folder")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        self.component_domain = component_domain
        self.component_secret = component_secret
        self.debug_log = debug_log
        self.c2s_port = free_port()
        self.component_port = free_port()
        self.log_path = self.workdir / "server.log"
        self.process: Optional[ManagedProcess] = None
        self.users: dict[str, str] = {}

    # --- addresses -------------------------------------------------------------------

    @property
    def c2s_addr(self) -> tuple[str, int]:
        return (LOOPBACK, self.c2s_port)

    @property
    def component_addr(self) -> tuple[str, int]:
        return (LOOPBACK, self.component_port)

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def gateway_xmpp_section(self) -> str:
        """The gateway's `[xmpp]` table (gateway.toml) for this server's component listener."""
        return (
            "[xmpp]\n"
            f'component_jid = "{self.component_domain}"\n'
            f'secret = "{self.component_secret}"\n'
            f'server = "{LOOPBACK}:{self.component_port}"\n'
        )

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    # --- lifecycle -------------------------------------------------------------------

    def _make_process(self) -> ManagedProcess:
        raise NotImplementedError

    def _ports(self) -> list[int]:
        return [self.c2s_port, self.component_port]

    def start(self, timeout: float = 30.0) -> "XmppServer":
        if self.process is None:
            self.process = self._make_process()
        self.process.start()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if not self.process or not self.process.running():
                code = self.process.proc.returncode if self.process and self.process.proc else None
                raise ServerError(f"{self.kind} exited during start (code {code}):\n{self.log_tail()}")
            return all(port_open(p) for p in self._ports())

        try:
            wait_until(ready, timeout, f"{self.kind} ports {self._ports()}")
        except ServerError as e:
            raise ServerError(f"{e}\n{self.log_tail()}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server by its PID (idempotent)."""
        if self.process is not None:
            self.process.stop(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, not a clean shutdown (connections are not closed politely)."""
        if self.process is not None:
            self.process.stop(timeout=5, hard=True)

    def restart(self, timeout: float = 30.0, hard: bool = False, down_for: float = 0.0) -> "XmppServer":
        """Stops (SIGTERM, or SIGKILL if `hard`), stays down `down_for` seconds (so a
        reconnecting component meets refused connections), and starts again on the same ports
        with the same data (accounts and rosters survive); returns once the ports accept
        connections. Interop test (f) measures from this return.

        ejabberd: `hard=True` seconds after a write (account, roster) loses that write: its
        mnesia disc_only (dets) tables are not synced yet. Use a soft restart there."""
        if hard:
            self.kill()
        else:
            self.stop()
        # The ports must be free again before the new instance binds them.
        wait_until(lambda: not any(port_open(p) for p in self._ports()), 10, f"{self.kind} ports to close")
        if down_for > 0:
            time.sleep(down_for)
        return self.start(timeout=timeout)

    def register(self, user: str, password: str) -> str:
        """Creates the account `user@domain`; returns the bare JID."""
        raise NotImplementedError

    def log_tail(self, lines: int = 80) -> str:
        return f"----- {self.kind} log {self.log_path} (tail) -----\n{tail(self.log_path, lines)}"

    def __enter__(self) -> "XmppServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProsodyServer(XmppServer):
    """Prosody 0.12 run in the foreground (`prosody --config FILE -F`) as root
    (`run_as_root`), plaintext c2s with SASL allowed (no TLS, no s2s)."""

    kind = "prosody"

    def __init__(self, workdir: Path, **kw) -> None:
        super().__init__(workdir, **kw)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "prosody.cfg.lua"
        self.data_dir.mkdir()
        (self.workdir / "certs").mkdir()  # silences "Error indexing certificate directory"
        self.config_path.write_text(self.config_text())

    def config_text(self) -> str:
        level = "debug" if self.debug_log else "info"
        return f"""-- generated by interop/xmpp/servers.py
run_as_root = true
data_path = "{self.data_dir}"
pidfile = "{self.workdir}/prosody.pid"
certificates = "{self.workdir}/certs"
plugin_paths = {{}}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping" }}
modules_disabled = {{ "s2s"; "tls"; "offline" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
c2s_ports = {{ {self.c2s_port} }}
c2s_interfaces = {{ "{LOOPBACK}" }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
component_ports = {{ {self.component_port} }}
component_interfaces = {{ "{LOOPBACK}" }}
log = {{ {level} = "{self.log_path}" }}

VirtualHost "{self.domain}"

Component "{self.component_domain}"
    component_secret = "{self.component_secret}"
"""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOME"] = str(self.workdir)
        return env

    def _make_process(self) -> ManagedProcess:
        exe = shutil.which("prosody")
        if exe is None:
            raise ServerError("prosody not found; run interop/xmpp/setup.sh")
        return ManagedProcess(
            "prosody",
            [exe, "--config", str(self.config_path), "-F"],
            self.workdir / "prosody.stdout",
            cwd=self.workdir,
            env=self._env(),
        )

    def log_tail(self, lines: int = 80) -> str:
        return super().log_tail(lines) + (
            f"\n----- prosody stdout (tail) -----\n{tail(self.workdir / 'prosody.stdout', 20)}"
        )

    def prosodyctl(self, *args: str, timeout: float = 30.0) -> str:
        exe = shutil.which("prosodyctl")
        if exe is None:
            raise ServerError("prosodyctl not found; run interop/xmpp/setup.sh")
        out = subprocess.run(
            [exe, "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.workdir),
            env=self._env(),
        )
        if out.returncode != 0:
            raise ServerError(f"prosodyctl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def register(self, user: str, password: str) -> str:
        # prosodyctl writes the account file under data_path; works with the server up or down.
        self.prosodyctl("register", user, self.domain, password)
        self.users[user] = password
        return self.jid(user)


def _ejabberd_erl_libs() -> str:
    dirs = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin"))
    if not dirs:
        raise ServerError("ejabberd libraries not found; run interop/xmpp/setup.sh")
    return str(Path(dirs[-1]).parent.parent)


class EjabberdServer(XmppServer):
    """ejabberd 23.01 as an isolated Erlang node (see the module doc): own node name, cookie,
    distribution port (no epmd), config, mnesia spool and logs, all under `workdir`."""

    kind = "ejabberd"

    def __init__(self, workdir: Path, **kw) -> None:
        super().__init__(workdir, **kw)
        tag = secrets.token_hex(4)
        self.node = f"xi{tag}@localhost"
        self.cookie = secrets.token_hex(16)
        self.dist_port = free_port()
        self.spool_dir = self.workdir / "spool"
        self.config_path = self.workdir / "ejabberd.yml"
        self.inetrc_path = self.workdir / "inetrc"
        self.home = self.workdir / "home"
        for d in (self.spool_dir, self.home, self.workdir / "logs"):
            d.mkdir()
        self.config_path.write_text(self.config_text())
        self.inetrc_path.write_text('{lookup,["file"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n')
        self._ctl_count = 0

    def config_text(self) -> str:
        level = "debug" if self.debug_log else "info"
        return f"""# generated by interop/xmpp/servers.py
hosts: ["{self.domain}"]
loglevel: {level}
log_rotate_count: 0
listen:
  -
    port: {self.c2s_port}
    ip: "{LOOPBACK}"
    module: ejabberd_c2s
    starttls_required: false
  -
    port: {self.component_port}
    ip: "{LOOPBACK}"
    module: ejabberd_service
    hosts:
      "{self.component_domain}":
        password: "{self.component_secret}"
auth_method: internal
auth_password_format: plain
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_last: {{}}
"""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.home),
            ERL_LIBS=_ejabberd_erl_libs(),
            ERL_INETRC=str(self.inetrc_path),
            ERL_CRASH_DUMP=str(self.workdir / "logs" / "erl_crash.dump"),
            ERL_CRASH_DUMP_BYTES="0",
            EJABBERD_CONFIG_PATH=str(self.config_path),
            EJABBERD_LOG_PATH=str(self.workdir / "logs" / "ejabberd.log"),
        )
        return env

    def _dist_args(self) -> list[str]:
        return ["-setcookie", self.cookie, "-start_epmd", "false", "-erl_epmd_port", str(self.dist_port)]

    def _make_process(self) -> ManagedProcess:
        erl = shutil.which("erl")
        if erl is None:
            raise ServerError("erl not found; run interop/xmpp/setup.sh")
        argv = [
            erl,
            "-sname",
            self.node,
            *self._dist_args(),
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "+K",
            "true",
            "+P",
            "250000",
            "-noinput",
            "-mnesia",
            "dir",
            f'"{self.spool_dir}"',
            "-s",
            "ejabberd",
        ]
        # `erl` execs erlexec, which execs beam.smp: the recorded PID is the VM itself.
        return ManagedProcess("ejabberd", argv, self.log_path, cwd=self.workdir, env=self._env())

    def _ports(self) -> list[int]:
        return [self.c2s_port, self.component_port, self.dist_port]

    def log_tail(self, lines: int = 80) -> str:
        detailed = self.workdir / "logs" / "ejabberd.log"
        return super().log_tail(20) + f"\n----- ejabberd log {detailed} (tail) -----\n{tail(detailed, lines)}"

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Runs an ejabberdctl command against this node (same mechanism as ejabberdctl)."""
        erl = shutil.which("erl")
        if erl is None:
            raise ServerError("erl not found")
        self._ctl_count += 1
        argv = [
            erl,
            "-sname",
            f"xictl{self._ctl_count}{secrets.token_hex(3)}@localhost",
            *self._dist_args(),
            "-dist_listen",
            "false",
            "-hidden",
            "-noinput",
            "-s",
            "ejabberd_ctl",
            "-extra",
            self.node,
            *args,
        ]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=str(self.workdir), env=self._env()
        )
        if out.returncode != 0:
            raise ServerError(f"ejabberdctl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def register(self, user: str, password: str) -> str:
        if not self.running():
            raise ServerError("ejabberd registers users through the running node: start() first")
        self.ctl("register", user, self.domain, password)
        self.users[user] = password
        return self.jid(user)


SERVER_KINDS = {"prosody": ProsodyServer, "ejabberd": EjabberdServer}


def make_server(kind: str, workdir: Path, **kw) -> XmppServer:
    """`kind` is "prosody" or "ejabberd"; keyword arguments go to the server class."""
    try:
        cls = SERVER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown XMPP server kind {kind!r} (known: {sorted(SERVER_KINDS)})") from None
    return cls(workdir, **kw)
