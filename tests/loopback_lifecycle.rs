//! The real binary starts on loopback ports, logs where it listens, and stops cleanly.

mod loopback_support;

use std::net::{TcpStream, UdpSocket};

use loopback_support::Gateway;

#[test]
fn logs_bound_udp_tcp_and_admin_addresses() {
    let gw = Gateway::start();
    for addr in [gw.udp, gw.tcp, gw.admin] {
        let addr = addr.expect("address logged");
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0, "the bound port, not the configured 0");
    }
}

#[test]
fn logged_tcp_port_accepts_connections() {
    let gw = Gateway::start();
    TcpStream::connect(gw.tcp.unwrap()).expect("connect to the logged SIP TCP port");
    TcpStream::connect(gw.admin.unwrap()).expect("connect to the logged admin port");
}

#[test]
fn sigterm_exits_zero() {
    let mut gw = Gateway::start();
    gw.terminate();
    let status = gw.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", gw.log.join("\n"));
}

#[test]
fn sigterm_runs_graceful_shutdown() {
    let mut gw = Gateway::start();
    gw.terminate();
    gw.wait_exit();
    gw.wait_for_line("shutting down");
    gw.wait_for_line("stopped");
}

#[test]
fn sip_port_in_use_exits_one() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = loopback_support::loopback_config(dir.path(), "").replace(
        "udp_listen = \"127.0.0.1:0\"",
        &format!("udp_listen = \"127.0.0.1:{port}\""),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let (status, _, stderr) =
        loopback_support::run_to_exit(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "stderr names the address:\n{stderr}"
    );
}

#[test]
fn json_log_format_gives_one_json_object_per_line() {
    let mut gw = Gateway::start_custom(|c| c.replace("[log]\n", "[log]\nformat = \"json\"\n"), &[]);
    let line = gw.wait_for_line("sip listening");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["fields"]["message"], "sip listening");
    let addr: std::net::SocketAddr = v["fields"]["addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
}

#[test]
fn rust_log_wins_over_configured_level() {
    // log.level = "error" would hide the "gateway running" line the harness waits for.
    let mut gw = Gateway::start_custom(
        |c| c.replace("level = \"debug\"", "level = \"error\""),
        &[("RUST_LOG", "info")],
    );
    gw.wait_for_line("gateway running");
}

/// The sample runs as is; only the ports and the store move (through `XSG_` overrides) so
/// the test does not depend on 5060 and 8560 being free.
#[test]
fn sample_config_runs_with_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sample.db");
    let sample = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"));
    // An XMPP server that accepts and stays silent: the link waits, the test is not
    // affected by whatever listens on 5347 on this machine.
    let silent_xmpp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let xmpp_addr = silent_xmpp.local_addr().unwrap().to_string();
    let mut gw = Gateway::start_file(
        sample,
        &[
            ("XSG_SIP__UDP_LISTEN", "127.0.0.1:0"),
            ("XSG_SIP__TCP_LISTEN", "127.0.0.1:0"),
            ("XSG_ADMIN__LISTEN", "127.0.0.1:0"),
            ("XSG_STORE__PATH", store.to_str().unwrap()),
            ("XSG_XMPP__SERVER", xmpp_addr.as_str()),
        ],
        Some(dir),
    );
    assert_ne!(gw.udp.unwrap().port(), 5060);
    assert_ne!(gw.admin.unwrap().port(), 8560);
    assert!(
        store.exists(),
        "the store was created where the override says"
    );
    gw.terminate();
    assert_eq!(gw.wait_exit().code(), Some(0));
}
