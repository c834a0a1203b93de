//! Runs the real `xmpp-sip-gateway` binary for loopback tests (hickory-style): a temp
//! config on `127.0.0.1:0` ports, a temp store, and the bound ports read from its log.
//!
//! Every wait is bounded and waits on an event (a log line, a socket read, the exit of the
//! process), never on a blind sleep. The child is killed by its PID when the guard drops,
//! on every path including a failed assertion.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_xmpp-sip-gateway");
/// Bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running gateway. Dropping it kills the process by PID.
pub struct Gateway {
    pub pid: u32,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    lines: mpsc::Receiver<String>,
    exited: mpsc::Receiver<ExitStatus>,
    exit: Option<ExitStatus>,
    /// Every log line seen so far.
    pub log: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

/// A config on ephemeral loopback ports with the store in `dir`; `extra` is appended.
pub fn loopback_config(dir: &Path, extra: &str) -> String {
    format!(
        "[log]\nlevel = \"debug\"\n\
         [sip]\nudp_listen = \"127.0.0.1:0\"\ntcp_listen = \"127.0.0.1:0\"\nmax_message_size = 4096\n\
         [store]\npath = {:?}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{extra}",
        dir.join("gateway.db").display().to_string()
    )
}

/// Writes `text` as a config file in a new temp dir.
pub fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

impl Gateway {
    /// Starts the binary with the loopback config and waits until it reports running.
    pub fn start() -> Gateway {
        Self::start_with("")
    }

    pub fn start_with(extra: &str) -> Gateway {
        Self::start_custom(|c| c + extra, &[])
    }

    /// Starts with the loopback config passed through `edit`, and extra environment.
    pub fn start_custom(edit: impl FnOnce(String) -> String, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = edit(loopback_config(dir.path(), ""));
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).expect("write config");
        Self::start_file(&path, env, Some(dir))
    }

    /// Starts with an existing config file; `dir`, if any, is kept as long as the gateway.
    pub fn start_file(
        path: &Path,
        env: &[(&str, &str)],
        dir: Option<tempfile::TempDir>,
    ) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("--config")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr");
        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut gw = Gateway {
            pid,
            udp: None,
            tcp: None,
            admin: None,
            lines,
            exited,
            exit: None,
            log: Vec::new(),
            _dir: dir,
        };
        gw.wait_for_line("gateway running");
        gw.udp = gw.logged_addr("sip listening transport=udp");
        gw.tcp = gw.logged_addr("sip listening transport=tcp");
        gw.admin = gw.logged_addr("admin listening");
        gw
    }

    /// Waits for a log line containing `needle` (seen before or arriving within WAIT).
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?} within {WAIT:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The `addr=` value of the first log line containing `needle`.
    fn logged_addr(&self, needle: &str) -> Option<SocketAddr> {
        let line = self.log.iter().find(|l| l.contains(needle))?;
        let value = line.split("addr=").nth(1)?.split_whitespace().next()?;
        value.parse().ok()
    }

    /// Sends SIGTERM to the child, by PID.
    pub fn terminate(&self) {
        signal(self.pid, "TERM");
    }

    /// Waits for the exit (bounded) and asserts its code, showing the log if it differs.
    pub fn assert_exit_code(&mut self, code: i32) {
        let status = self.wait_exit();
        assert_eq!(status.code(), Some(code), "log:\n{}", self.log.join("\n"));
    }

    /// Waits for the process to exit (bounded).
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let status = self
            .exited
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("gateway did not exit within {WAIT:?}"));
        self.exit = Some(status);
        // Collect the rest of the log for assertions.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        status
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            if let Ok(s) = self.exited.try_recv() {
                self.exit = Some(s);
            }
        }
        self.exit.is_some()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !self.has_exited() {
            signal(self.pid, "KILL");
            let _ = self.exited.recv_timeout(WAIT);
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Runs the binary to completion with `args` (bounded), returning (status, stdout, stderr).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gateway");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(out)) => (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        _ => {
            signal(pid, "KILL");
            panic!("gateway {args:?} did not finish within {WAIT:?}");
        }
    }
}

/// A minimal request with our own Via branch and Call-ID, for matching the answer.
pub fn request(method: &str, transport: &str, local: SocketAddr, call_id: &str) -> String {
    format!(
        "{method} sip:gateway@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@127.0.0.1>;tag=t{call_id}\r\n\
         To: <sip:gateway@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a SIP response's status line.
pub fn status_of(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    (parts.next()? == "SIP/2.0").then_some(())?;
    parts.next()?.parse().ok()
}

/// The first value of a header (case-insensitive name, long form only).
pub fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
