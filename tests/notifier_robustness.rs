//! Bad input gets a protocol answer, never a panic (architecture.md habit 6).

mod notifier_support;

use notifier_support::*;
use proptest::prelude::*;
use xmpp_sip_gateway::core::sip::notifier::NotifierAction;

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ -~]{0,40}",
        Just("<sip:a@b;lr>, <sip:c@d>".to_string()),
        Just("\"x <sip:y@z>".to_string()),
        Just("presence;id=".to_string()),
        Just("99999999999999999999".to_string()),
    ]
}

proptest! {
    /// Whatever the header values, a SUBSCRIBE gets exactly one final response, and any
    /// NOTIFY sent belongs to a 200.
    #[test]
    fn any_subscribe_gets_exactly_one_final_response(
        name in prop::sample::select(vec![
            "Event", "Expires", "Accept", "Contact", "From", "To", "Record-Route", "CSeq", "Call-ID",
        ]),
        value in header_value(),
        in_dialog in any::<bool>(),
    ) {
        let mut h = Harness::new();
        let policy = TestPolicy::active(Some(pidf("x")));
        let mut sub = Sub::initial();
        if in_dialog {
            let (_, tag) = h.established(&Sub::initial(), &policy);
            sub = sub.in_dialog(&tag, 2);
        }
        let sub = sub.header(name, &value);
        let actions = h.subscribe(&sub, &policy);
        let responses: Vec<u16> = actions
            .iter()
            .filter_map(|a| match a {
                NotifierAction::Respond(r) => Some(r.status),
                _ => None,
            })
            .collect();
        prop_assert_eq!(responses.len(), 1);
        prop_assert!(responses[0] >= 200);
        if responses[0] != 200 {
            prop_assert!(notifies(&actions).is_empty());
        }
    }
}
