//! `xsg-load baseline`: the raw loopback UDP forwarder, through the command line.

use std::process::Command;

#[test]
fn baseline_moves_every_message_in_closed_loop_and_prints_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_xsg-load"))
        .args([
            "baseline",
            "--rate",
            "max",
            "--window",
            "16",
            "--duration",
            "5",
            "--max-messages",
            "2000",
        ])
        .output()
        .expect("run xsg-load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("json line")).expect("JSON summary");
    assert_eq!(json["mode"], "baseline");
    assert_eq!(
        (json["sent"].as_u64(), json["received"].as_u64()),
        (Some(2000), Some(2000))
    );
    assert_eq!(json["lost"], 0);
    assert!(json["latency"]["p99_ms"].as_f64().is_some());
}

#[test]
fn baseline_rejects_a_non_numeric_rate() {
    let out = Command::new(env!("CARGO_BIN_EXE_xsg-load"))
        .args(["baseline", "--rate", "fast"])
        .output()
        .expect("run xsg-load");
    assert_eq!(out.status.code(), Some(2));
}
