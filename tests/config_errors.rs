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

// ----- registration sources, usrloc, bla -----

fn agent() -> &'static str {
    "[presence_agent]\ndomains = [\"sip.test\"]\n"
}

#[test]
fn copy_domains_need_a_trusted_proxy() {
    let e = errors(&with_sip(&format!(
        "trusted = []\n{}[registrations]\ncopy_domains = [\"pbx.test\"]\n",
        agent()
    )));
    assert!(e.has_path("registrations.copy_domains"), "{e}");
}

#[test]
fn a_copy_domain_of_the_embedded_registrar_is_rejected_unless_the_registrar_is_off() {
    let text = |registrar: &str| {
        with_sip(&format!(
            "trusted = [\"127.0.0.1/32\"]\n{}{registrar}[registrations]\ncopy_domains = [\"sip.test\"]\n",
            agent()
        ))
    };
    let e = errors(&text(""));
    assert!(e.has_path("registrations.copy_domains"), "{e}");
    let ok = config::load_str(
        &text("[registrar]\nenabled = false\n"),
        Some(HashMap::new()),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn bad_reg_event_aor_and_server_name_their_keys() {
    let e = errors(&with_sip(
        "[registrations]\nreg_event_aors = [\"sip:ok@x.test\", \"nobody\"]\nreg_event_server = \"sip:registrar.example.org\"\n",
    ));
    assert!(e.has_path("registrations.reg_event_aors[1]"), "{e}");
    assert!(e.has_path("registrations.reg_event_server"), "{e}");
}

#[test]
fn usrloc_that_selects_no_aor_is_rejected() {
    let e = errors(&with_sip(&format!("{}[usrloc]\n", agent())));
    assert!(e.has_path("usrloc"), "{e}");
}

#[test]
fn usrloc_and_bla_without_any_registration_source_are_rejected() {
    let e = errors(&with_sip(
        "[usrloc]\ndomains = [\"sip.test\"]\n[bla]\nlines = [\"sip:line1@sip.test\"]\n",
    ));
    assert!(e.has_path("usrloc"), "{e}");
    assert!(e.has_path("bla"), "{e}");
}

#[test]
fn bla_needs_lines_and_valid_aors() {
    let e = errors(&with_sip(&format!("{}[bla]\nlines = []\n", agent())));
    assert!(e.has_path("bla.lines"), "{e}");
    let e = errors(&with_sip(&format!(
        "{}[bla]\nlines = [\"line1\"]\n",
        agent()
    )));
    assert!(e.has_path("bla.lines[0]"), "{e}");
}

#[test]
fn usrloc_bla_and_sources_load_into_the_module_configs() {
    let c = config::load_str(
        &with_sip(&format!(
            "trusted = [\"127.0.0.1/32\"]\n{}[registrations]\ncopy_domains = [\"PBX.test\"]\npublish_mark = \"X-Publish\"\n\
             reg_event_aors = [\"sip:carol@pbx.test\"]\nreg_event_server = \"sip:127.0.0.1:5070\"\n\
             [usrloc]\npatterns = [\"sip:*@sip.test\"]\nentity_prefix = \"pres\"\nclosed_linger_secs = 5\n\
             [bla]\nlines = [\"sip:line1@sip.test\"]\n",
            agent()
        )),
        Some(HashMap::new()),
    )
    .expect("valid");
    assert_eq!(c.registrations.copy_domains, ["pbx.test"]);
    let u = c.usrloc.as_ref().unwrap();
    assert_eq!(u.patterns, ["sip:*@sip.test"]);
    assert_eq!(u.closed_linger, std::time::Duration::from_secs(5));
    assert_eq!(c.bla.as_ref().unwrap().lines, ["sip:line1@sip.test"]);
    let m = c.registrar_module_config(&c.engine);
    assert_eq!(m.domains, ["sip.test"]);
    assert_eq!(m.reg_event.aors, ["sip:carol@pbx.test"]);
    assert_eq!(m.reg_event.server.as_deref(), Some("sip:127.0.0.1:5070"));
    assert!(m.reg_event.watcher.starts_with("sip:"));
}
