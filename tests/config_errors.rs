//! Each validation error names its key path, and all errors are reported at once.

use std::collections::HashMap;

use xmpp_sip_gateway::config;

fn errors(text: &str) -> config::ConfigErrors {
    config::load_str(text, Some(HashMap::new())).expect_err("config should be rejected")
}

fn with_sip(extra: &str) -> String {
    format!("[sip]\nudp_listen = \"127.0.0.1:5060\"\n{extra}\n")
}

#[test]
fn invalid_cidr_names_its_index() {
    let e = errors(&with_sip("trusted = [\"127.0.0.0/8\", \"10.0.0/8\"]"));
    assert_eq!(e.to_string(), "sip.trusted[1]: invalid CIDR \"10.0.0/8\"");
}

#[test]
fn no_listen_address_is_an_error_on_sip() {
    let e = errors("[sip]\n");
    assert!(e.has_path("sip"), "{e}");
}

#[test]
fn bad_listen_address_names_the_key() {
    let e = errors("[sip]\nudp_listen = \"localhost\"\n");
    assert!(e.has_path("sip.udp_listen"), "{e}");
}

#[test]
fn unspecified_listen_needs_public_host() {
    let e = errors("[sip]\nudp_listen = \"0.0.0.0:5060\"\n");
    assert!(e.has_path("sip.public_host"), "{e}");
}

#[test]
fn bad_outbound_proxy_names_the_key() {
    let e = errors(&with_sip("outbound_proxy = \"proxy.example.org\""));
    assert!(e.has_path("sip.outbound_proxy"), "{e}");
}

#[test]
fn credential_without_password_names_its_entry() {
    let e = errors(&with_sip("[[sip.credentials]]\nusername = \"a\"\npassword = \"b\"\n[[sip.credentials]]\nusername = \"c\""));
    assert!(e.has_path("sip.credentials[1].password"), "{e}");
}

#[test]
fn t2_below_t1_is_rejected() {
    let e = errors(&with_sip("t1_ms = 1000\nt2_ms = 500"));
    assert!(e.has_path("sip.t2_ms"), "{e}");
}

#[test]
fn bad_refresh_window_names_the_key() {
    let e = errors(&format!(
        "{}[pua]\nrefresh_window = [0.9, 0.8]\n",
        with_sip("")
    ));
    assert!(e.has_path("pua.refresh_window"), "{e}");
}

#[test]
fn min_expires_above_max_expires_is_rejected() {
    let e = errors(&format!(
        "{}[notifier]\nmin_expires = 100\nmax_expires = 50\n",
        with_sip("")
    ));
    assert!(e.has_path("notifier.max_expires"), "{e}");
}

#[test]
fn unknown_log_format_names_the_key() {
    let e = errors(&format!("[log]\nformat = \"xml\"\n{}", with_sip("")));
    assert!(e.has_path("log.format"), "{e}");
}

#[test]
fn bad_bridge_scheme_names_its_domain_entry() {
    let e = errors(&format!(
        "{}[xmpp]\ncomponent_jid = \"sip.x\"\nsecret = \"s\"\nserver = \"127.0.0.1:5347\"\n\
         [bridge]\n[[bridge.domains]]\nxmpp_domain = \"x\"\ncomponent_domain = \"sip.x\"\nsip_domain = \"s\"\nscheme = \"rot13\"\n",
        with_sip("")
    ));
    assert!(e.has_path("bridge.domains[0].scheme"), "{e}");
}

#[test]
fn bridge_mode_must_be_notifier_or_publish() {
    let e = errors(&format!("{}[bridge]\nmode = \"proxy\"\n", with_sip("")));
    assert!(e.has_path("bridge.mode"), "{e}");
}

#[test]
fn missing_xmpp_secret_names_the_key() {
    let e = errors(&format!(
        "{}[xmpp]\ncomponent_jid = \"sip.x\"\nserver = \"127.0.0.1:5347\"\n",
        with_sip("")
    ));
    assert!(e.has_path("xmpp.secret"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = errors(&with_sip("max_message_size = \"big\""));
    assert!(e.has_path("sip.max_message_size"), "{e}");
}

#[test]
fn all_errors_are_reported_together() {
    let e = errors("[sip]\nudp_listen = \"x\"\ntrusted = [\"y\"]\n[admin]\nlisten = \"z\"\n");
    assert!(
        e.has_path("sip.udp_listen") && e.has_path("sip.trusted[0]") && e.has_path("admin.listen"),
        "{e}"
    );
}

#[test]
fn delimiter_must_be_one_character() {
    let e = errors(&format!(
        "{}[xmpp]\ncomponent_jid = \"sip.x\"\nsecret = \"s\"\nserver = \"127.0.0.1:5347\"\n\
         [bridge]\n[[bridge.domains]]\nxmpp_domain = \"x\"\ncomponent_domain = \"sip.x\"\n\
         sip_domain = \"s\"\nscheme = \"delimiter\"\ndelimiter = \"**\"\n",
        with_sip("")
    ));
    assert!(e.has_path("bridge.domains[0].delimiter"), "{e}");
}
