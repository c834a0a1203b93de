//! `--check-config` validates without starting: key paths on stderr, exit 2 when invalid.

mod loopback_support;

use loopback_support::{run_to_exit, write_config};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");

#[test]
fn check_config_accepts_the_sample() {
    let (status, stdout, stderr) = run_to_exit(&["--config", SAMPLE, "--check-config"], &[]);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn check_config_prints_each_error_with_its_key_path_and_exits_2() {
    let (_dir, path) = write_config(
        "[sip]\nudp_listen = \"127.0.0.1:5060\"\ntrusted = [\"127.0.0.0/8\", \"10.0.0/8\"]\n\
         [admin]\nlisten = \"nowhere\"\n",
    );
    let (status, _, stderr) =
        run_to_exit(&["--config", path.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("sip.trusted[1]: invalid CIDR \"10.0.0/8\""),
        "{stderr}"
    );
    assert!(stderr.contains("admin.listen: "), "{stderr}");
}

#[test]
fn check_config_rejects_unknown_key_with_its_path() {
    let (_dir, path) = write_config("[sip]\nudp_listen = \"127.0.0.1:5060\"\nudp_lisen = \"x\"\n");
    let (status, _, stderr) =
        run_to_exit(&["--config", path.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("sip.udp_lisen"), "{stderr}");
}

#[test]
fn check_config_applies_environment_overrides() {
    let (status, _, stderr) = run_to_exit(
        &["--config", SAMPLE, "--check-config"],
        &[("XSG_SIP__UDP_LISTEN", "not-an-address")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("sip.udp_listen"), "{stderr}");
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let (status, _, stderr) = run_to_exit(&["--config", missing.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn invalid_config_does_not_start_the_daemon() {
    let (_dir, path) = write_config("[sip]\n");
    let (status, _, stderr) = run_to_exit(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("sip: "), "{stderr}");
}
