"""SIPp (Debian package `sip-tester`, 3.6.1) running one scenario of interop/sipp/ against a
SIP server on loopback: one call (`-m 1`), UDP, a bounded timeout (SIPp's own `-timeout`
and a subprocess deadline above it), its PID recorded and stopped by that PID.

`run_scenario` returns the exit code (0: the call succeeded; 1: it failed; 97/99: SIPp
could not run), the `step=` lines the scenarios write to SIPp's log file (parsed into
dicts) and the message/error traces, for the test's own assertions and diagnostics.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .procs import LOOPBACK, ManagedProcess, free_port

SIPP_DIR = Path(__file__).resolve().parent.parent / "sipp"

_STEP = re.compile(r"step=\S+(?: \S+=\S*)*")


def sipp_binary() -> str:
    for cand in (shutil.which("sipp"), "/usr/bin/sipp"):
        if cand and Path(cand).exists():
            return cand
    raise RuntimeError("sipp not found: run interop/setup.sh (Debian package sip-tester)")


@dataclass
class SippResult:
    scenario: str
    argv: list[str]
    returncode: int
    steps: list[dict[str, str]]
    log: str
    messages: str
    errors: str
    stdout: str
    timed_out: bool = False
    extra: dict = field(default_factory=dict)

    def step(self, name: str) -> dict[str, str]:
        """The logged fields of the final response of step `name` (asserts it is there)."""
        for s in self.steps:
            if s.get("step") == name:
                return s
        raise AssertionError(f"SIPp {self.scenario}: step {name!r} never completed\n{self.describe()}")

    def describe(self) -> str:
        return (
            f"`{' '.join(self.argv)}` exited {self.returncode}{' (timed out)' if self.timed_out else ''}\n"
            f"--- steps ---\n" + "\n".join(str(s) for s in self.steps)
            + f"\n--- errors ---\n{self.errors[-3000:]}\n--- messages (tail) ---\n{self.messages[-6000:]}"
            + f"\n--- stdout (tail) ---\n{self.stdout[-2000:]}"
        )


def parse_steps(log_text: str) -> list[dict[str, str]]:
    out = []
    for line in log_text.splitlines():
        m = _STEP.search(line)
        if not m:
            continue
        fields: dict[str, str] = {}
        for part in m.group(0).split(" "):
            k, _, v = part.partition("=")
            fields[k] = v
        out.append(fields)
    return out


def run_scenario(
    scenario: str,
    target: tuple[str, int],
    run_dir: Path,
    *,
    user: str = "bob",
    domain: str = "sip.test",
    auth_user: Optional[str] = None,
    password: Optional[str] = None,
    keys: Optional[dict[str, str]] = None,
    timeout: float = 30.0,
) -> SippResult:
    """Runs interop/sipp/<scenario> once against `target` (UDP) and waits at most `timeout`
    seconds (SIPp's own -timeout is the same; the process is stopped by PID after it)."""
    sf = SIPP_DIR / scenario
    if not sf.exists():
        raise RuntimeError(f"no SIPp scenario {sf}")
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(scenario).stem
    log_file = run_dir / f"{stem}.sipp-log.txt"
    msg_file = run_dir / f"{stem}.sipp-messages.txt"
    err_file = run_dir / f"{stem}.sipp-errors.txt"
    out_file = run_dir / f"{stem}.sipp-stdout.txt"
    for f in (log_file, msg_file, err_file):
        f.unlink(missing_ok=True)
    all_keys = {"domain": domain, "etag_unknown": "xsg-never-issued-etag"}
    all_keys.update(keys or {})
    argv = [
        sipp_binary(),
        f"{target[0]}:{target[1]}",
        "-sf", str(sf),
        "-m", "1",
        "-t", "u1",
        "-i", LOOPBACK,
        "-p", str(free_port("udp")),
        "-s", user,
        "-timeout", f"{int(timeout)}s",
        "-timeout_error",
        "-max_recv_loops", "1000",
        "-nostdin",
        "-trace_logs", "-log_file", str(log_file),
        "-trace_msg", "-message_file", str(msg_file),
        "-trace_err", "-error_file", str(err_file),
    ]  # fmt: skip
    for k, v in all_keys.items():
        argv += ["-key", k, v]
    if password is not None:
        argv += ["-au", auth_user or user, "-ap", password]
    proc = ManagedProcess(f"sipp-{stem}", argv, out_file, cwd=run_dir).start()
    timed_out = False
    try:
        proc.proc.wait(timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        proc.stop(grace=3.0)
    rc = proc.proc.returncode if proc.proc.returncode is not None else -1

    def read(p: Path) -> str:
        try:
            return p.read_text(errors="replace")
        except OSError:
            return ""

    log_text = read(log_file)
    return SippResult(
        scenario=scenario,
        argv=argv,
        returncode=rc,
        steps=parse_steps(log_text),
        log=log_text,
        messages=read(msg_file),
        errors=read(err_file),
        stdout=read(out_file),
        timed_out=timed_out,
    )


def check_syntax(scenario: str, timeout: float = 20.0) -> tuple[int, str]:
    """Loads a scenario without any peer (SIPp parses the XML at start-up and exits at once
    on a syntax error): returns SIPp's exit code and output. A scenario that parses starts
    its first call towards a closed loopback port and ends by the short -timeout."""
    sf = SIPP_DIR / scenario
    argv = [
        sipp_binary(), f"{LOOPBACK}:{free_port('udp')}", "-sf", str(sf), "-m", "1", "-t", "u1",
        "-i", LOOPBACK, "-p", str(free_port("udp")), "-s", "bob", "-key", "domain", "sip.test",
        "-key", "etag_unknown", "x", "-timeout", "2s", "-nostdin",
    ]  # fmt: skip
    start = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr)[-3000:] + f"\n({time.monotonic() - start:.1f}s)"
