//! The management API of the real binary answers through the engine, and the `ctl`
//! subcommand of the same binary reaches it.

mod loopback_support;

use loopback_support::{run_to_exit, Gateway};

#[test]
fn ctl_health_gets_the_engine_answer() {
    let gw = Gateway::start();
    let url = format!("http://{}", gw.admin.unwrap());
    let (status, stdout, stderr) = run_to_exit(&["ctl", "--admin", &url, "health"], &[]);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(v["subscriptions"], 0, "{stdout}");
}

#[test]
fn ctl_against_a_stopped_gateway_fails_nonzero() {
    let mut gw = Gateway::start();
    let url = format!("http://{}", gw.admin.unwrap());
    gw.terminate();
    gw.wait_exit();
    let (status, _, stderr) = run_to_exit(&["ctl", "--admin", &url, "health"], &[]);
    assert_ne!(status.code(), Some(0), "stderr:\n{stderr}");
}

#[test]
fn disabled_admin_listens_nowhere() {
    let gw = Gateway::start_custom(
        |c| c.replace("[admin]\n", "[admin]\nenabled = false\n"),
        &[],
    );
    assert_eq!(gw.admin, None);
}
