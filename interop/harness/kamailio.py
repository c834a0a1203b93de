"""Kamailio 5.6 as the SIP presence server of the interop suite (interop/kamailio/presence.cfg).

One instance per test: a free loopback UDP port, a fresh SQLite database created from the
Debian package's schema (WAL journal), its own log; started in the foreground (`-DD -E`) so
its PID is recorded, and stopped by that PID.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from . import sipmsg
from .procs import LOOPBACK, ManagedProcess, free_port, tail

INTEROP_DIR = Path(__file__).resolve().parent.parent
CFG = INTEROP_DIR / "kamailio" / "presence.cfg"
# A plain registrar that copies every REGISTER to GW_URI (t_replicate, `X-Publish: yes`).
REGISTRAR_REPLICATE_CFG = INTEROP_DIR / "kamailio" / "registrar_replicate.cfg"
# Registrar + RFC 3680 `reg` event package (pua_reginfo publishes to presence_reginfo).
REGINFO_CFG = INTEROP_DIR / "kamailio" / "reginfo.cfg"
# BLA presence server: `dialog;sla` (presence_xml disable_bla 0), handle_publish(Sender).
PRESENCE_BLA_CFG = INTEROP_DIR / "kamailio" / "presence_bla.cfg"

# Where the Debian package kamailio-sqlite-modules ships the schema.
SCHEMA_DIRS = [Path("/usr/share/kamailio/db_sqlite"), Path("/usr/local/share/kamailio/db_sqlite")]
SCHEMA_FILES = ["standard-create.sql", "presence-create.sql"]


def answers_options(port: int, timeout: float, still_running: Optional[Callable[[], None]] = None) -> bool:
    """Sends OPTIONS to 127.0.0.1:`port` every 0.25 s until a 200 comes back (True) or
    `timeout` passes (False); bounded in time and attempts. `still_running` is called
    before each attempt and may raise to give up early (a server that exited)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.settimeout(0.25)
    me = s.getsockname()[1]
    uri = f"sip:{LOOPBACK}:{port}"
    deadline = time.monotonic() + timeout
    try:
        for attempt in range(int(timeout / 0.25) + 2):
            if still_running:
                still_running()
            req = sipmsg.build_request(
                "OPTIONS",
                uri,
                via_host=LOOPBACK,
                via_port=me,
                from_uri="sip:probe@127.0.0.1",
                from_tag=sipmsg.new_token(),
                to_uri=uri,
                to_tag=None,
                call_id=sipmsg.new_token("probe-"),
                cseq=attempt + 1,
            )
            s.sendto(req.to_bytes(), (LOOPBACK, port))
            try:
                data, _ = s.recvfrom(65535)
                if sipmsg.parse(data).status == 200:
                    return True
            except (socket.timeout, sipmsg.SipParseError):
                pass
            if time.monotonic() >= deadline:
                break
    finally:
        s.close()
    return False


@contextmanager
def running(ps: "KamailioPS", diagnostics) -> Iterator["KamailioPS"]:
    """Starts `ps` with its log in the test's diagnostics; stops it by PID on the way out,
    also on failure (for pytest fixtures: `with running(KamailioPS(...), diagnostics) as
    ps: yield ps`)."""
    diagnostics.files.append(ps.log_path)
    try:
        ps.start()
        yield ps
    finally:
        ps.stop()


def kamailio_binary() -> str:
    for cand in (shutil.which("kamailio"), "/usr/sbin/kamailio", "/usr/local/sbin/kamailio"):
        if cand and Path(cand).exists():
            return cand
    raise RuntimeError("kamailio not found: run interop/setup.sh")


def create_presence_db(path: Path) -> None:
    """Creates the presence tables from Kamailio's own schema files, in WAL mode."""
    for d in SCHEMA_DIRS:
        if all((d / f).exists() for f in SCHEMA_FILES):
            break
    else:
        raise RuntimeError(
            f"Kamailio sqlite schema ({', '.join(SCHEMA_FILES)}) not found in "
            f"{[str(d) for d in SCHEMA_DIRS]}: install kamailio-sqlite-modules (interop/setup.sh)"
        )
    con = sqlite3.connect(str(path))
    try:
        # WAL persists in the file; it lets Kamailio's processes and the test read concurrently.
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        assert mode.lower() == "wal", f"sqlite refused WAL mode: {mode}"
        for f in SCHEMA_FILES:
            con.executescript((d / f).read_text())
        con.commit()
    finally:
        con.close()


class KamailioPS:
    """A running Kamailio presence server on 127.0.0.1:port."""

    def __init__(
        self,
        run_dir: Path,
        *,
        contact_port: Optional[int] = None,
        cfg: Path = CFG,
        children: int = 2,
        substdefs: Optional[dict[str, str]] = None,
    ) -> None:
        self.run_dir = run_dir
        # Further `--substdef=!NAME!value!` of the script (registrar_replicate.cfg: GW_URI;
        # reginfo.cfg: UL_TIMER), besides KAM_PORT, PS_CONTACT_PORT and DB_FILE.
        self.substdefs = dict(substdefs or {})
        # The routing script; a test may run a variant of presence.cfg (harness/bridge.py).
        self.cfg = cfg
        # UDP worker processes. One serialises Kamailio's own sqlite writes (db_sqlite sets
        # no busy timeout, so two workers writing at once get "database is locked").
        self.children = children
        self.port = free_port("udp")
        # The Contact Kamailio puts in its 200s and NOTIFYs. A test may point it at a relay
        # so in-dialog requests pass through that relay too.
        self.contact_port = contact_port or self.port
        self.db_path = run_dir / "kamailio-presence.sqlite"
        self.log_path = run_dir / "kamailio.log"
        self.proc: Optional[ManagedProcess] = None

    @property
    def addr(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{LOOPBACK}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> "KamailioPS":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        create_presence_db(self.db_path)
        argv = [
            kamailio_binary(),
            "-f", str(self.cfg),
            "-DD",  # stay in the foreground: the recorded PID is the main process
            "-E",  # log to stderr (our log file)
            "-l", f"udp:{LOOPBACK}:{self.port}",
            "-n", str(self.children),
            "-m", "64",
            "-Y", str(self.run_dir / "kamailio-rundir"),
            f"--substdef=!KAM_PORT!{self.port}!",
            f"--substdef=!PS_CONTACT_PORT!{self.contact_port}!",
            f"--substdef=!DB_FILE!{self.db_path}!",
            *[f"--substdef=!{k}!{v}!" for k, v in self.substdefs.items()],
        ]  # fmt: skip
        (self.run_dir / "kamailio-rundir").mkdir(exist_ok=True)
        self.proc = ManagedProcess("kamailio", argv, self.log_path, cwd=self.run_dir).start()
        self._wait_ready(ready_timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """OPTIONS until a 200 comes back; bounded in time and attempts."""

        def still_running() -> None:
            if not self.proc.alive():
                raise RuntimeError(
                    f"kamailio exited with {self.proc.proc.returncode} during start:\n"
                    + tail(self.log_path)
                )

        if not answers_options(self.port, timeout, still_running):
            raise RuntimeError(f"kamailio on port {self.port} not answering OPTIONS:\n" + tail(self.log_path))

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=5.0)

    # ---- inspection (read-only; WAL lets us read while Kamailio writes) -----------------

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)
        con.row_factory = sqlite3.Row
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def active_watchers(self, presentity_uri: Optional[str] = None) -> list[dict]:
        sql = "SELECT * FROM active_watchers"
        args: tuple = ()
        if presentity_uri:
            sql += " WHERE presentity_uri = ?"
            args = (presentity_uri,)
        return [dict(r) for r in self._query(sql, args)]

    def presentities(self, username: Optional[str] = None) -> list[dict]:
        sql = "SELECT * FROM presentity"
        args: tuple = ()
        if username:
            sql += " WHERE username = ?"
            args = (username,)
        return [dict(r) for r in self._query(sql, args)]
