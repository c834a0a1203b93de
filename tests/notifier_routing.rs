//! NOTIFYs are built in-dialog (RFC 3261 §12.2.1.1, RFC 6665 §4.2.2).

mod notifier_support;

use notifier_support::*;
use xmpp_sip_gateway::core::sip::headers::NameAddr;
use xmpp_sip_gateway::core::sip::notifier::NotifierAction;

/// The route set comes from the SUBSCRIBE's Record-Route, in order, and with loose
/// routing the Request-URI is the subscriber's Contact.
#[test]
fn notify_follows_record_route_with_contact_as_request_uri() {
    let mut h = Harness::new();
    let sub = Sub::initial()
        .push("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>")
        .push("Record-Route", "<sip:p3.example;lr>");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    let (_, notify) = only_notify(&actions);
    assert_eq!(notify.uri, WATCHER_CONTACT);
    let routes: Vec<String> = notify
        .headers
        .get_all("Route")
        .iter()
        .flat_map(|v| NameAddr::parse_list("Route", v).unwrap())
        .map(|r| r.uri)
        .collect();
    assert_eq!(
        routes,
        vec![
            "sip:p1.example;lr",
            "sip:p2.example;lr",
            "sip:p3.example;lr"
        ]
    );
    let to_uri = actions
        .iter()
        .find_map(|a| match a {
            NotifierAction::SendNotify { to_uri, .. } => Some(to_uri.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(to_uri, "sip:p1.example;lr");
}

/// RFC 3261 §12.1.1: the 2xx to a dialog-creating request copies Record-Route.
#[test]
fn record_route_is_copied_into_the_200() {
    let mut h = Harness::new();
    let sub = Sub::initial().push("Record-Route", "<sip:p1.example;lr>");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    assert_eq!(
        response(&actions).headers.get_all("Record-Route"),
        vec!["<sip:p1.example;lr>"]
    );
}

/// Without a route set the NOTIFY goes straight to the Contact and has no Route.
#[test]
fn notify_without_record_route_targets_contact_directly() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::pending());
    let (_, notify) = only_notify(&actions);
    assert_eq!(notify.uri, WATCHER_CONTACT);
    assert!(notify.headers.get("Route").is_none());
}

/// RFC 3261 §12.2.1.1 strict routing: the first route becomes the Request-URI and the
/// Contact is appended to Route.
#[test]
fn strict_route_puts_first_hop_in_request_uri() {
    let mut h = Harness::new();
    let sub = Sub::initial().push("Record-Route", "<sip:strict.example>");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    let (_, notify) = only_notify(&actions);
    assert_eq!(notify.uri, "sip:strict.example");
    assert_eq!(
        notify.headers.get_all("Route"),
        vec![format!("<{WATCHER_CONTACT}>")]
    );
}

/// From = SUBSCRIBE's To with our tag, To = SUBSCRIBE's From, same Call-ID, Event echoed
/// with its id parameter, Contact and Max-Forwards present, no Via (the transaction
/// layer adds it).
#[test]
fn notify_carries_dialog_identity_and_event_id() {
    let mut h = Harness::new();
    let sub = Sub::initial().header("Event", "presence;id=7");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    let tag = to_tag(response(&actions));
    let (_, notify) = only_notify(&actions);
    let from = NameAddr::parse("From", notify.headers.get("From").unwrap()).unwrap();
    let to = NameAddr::parse("To", notify.headers.get("To").unwrap()).unwrap();
    assert_eq!(from.uri, PRESENTITY);
    assert_eq!(from.tag(), Some(tag.as_str()));
    assert_eq!(to.uri, WATCHER);
    assert_eq!(to.tag(), Some("ben1"));
    assert_eq!(notify.headers.get("Call-ID"), Some("call-1@192.0.2.7"));
    assert_eq!(notify.headers.get("Event"), Some("presence;id=7"));
    assert_eq!(
        notify.headers.get("Contact"),
        Some("<sip:gw@198.51.100.1:5060>")
    );
    assert_eq!(notify.headers.get("Max-Forwards"), Some("70"));
    assert!(notify.headers.get("Via").is_none());
    assert_eq!(notify.headers.get("CSeq"), Some("1 NOTIFY"));
}

/// RFC 6665 §4.1.2.1: a refresh is a target refresh; later NOTIFYs go to the new Contact.
#[test]
fn refresh_with_new_contact_retargets_notifies() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let (_, tag) = h.established(&Sub::initial(), &policy);
    let refresh = Sub::initial()
        .in_dialog(&tag, 2)
        .header("Contact", "<sip:ben@203.0.113.9:5070>");
    let actions = h.subscribe(&refresh, &policy);
    assert_eq!(only_notify(&actions).1.uri, "sip:ben@203.0.113.9:5070");
}
