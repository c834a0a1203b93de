//! Presence mapping between XMPP and PIDF (RFC 8048 §4–§7 tables, standards.md §7.5–§7.6,
//! product.md "Presence mapping decisions").
//!
//! The mapping works on [`ResourcePresence`], the part of an XMPP presence stanza that
//! carries availability, so it stays independent of stanza framing.

use crate::core::presence::{
    Activity, Basic, Contact, Note, Person, PresenceDoc, Show, Tuple, UserInput,
};
use crate::core::xmpp::address::escape_localpart;

/// The availability one XMPP resource (or one SIP tuple) announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePresence {
    pub resource: String,
    /// `false` for `type='unavailable'` / `<basic>closed</basic>`.
    pub available: bool,
    pub show: Option<Show>,
    /// `<status/>` texts with their `xml:lang`.
    pub statuses: Vec<Note>,
    /// XMPP priority, −128..=127; `None` when absent.
    pub priority: Option<i8>,
    /// XEP-0319 `<idle since>` (RFC 3339).
    pub idle_since: Option<String>,
}

impl ResourcePresence {
    pub fn available(resource: &str) -> Self {
        ResourcePresence {
            resource: resource.to_string(),
            available: true,
            show: None,
            statuses: Vec::new(),
            priority: None,
            idle_since: None,
        }
    }

    pub fn unavailable(resource: &str) -> Self {
        ResourcePresence {
            available: false,
            ..Self::available(resource)
        }
    }
}

/// XMPP priority → PIDF `<contact priority>` in thousandths: `floor(p*1000/127)`;
/// negative priorities are not mapped (RFC 8048 §7.5, product.md).
pub fn priority_to_milli(p: i8) -> Option<u16> {
    if p < 0 {
        None
    } else {
        Some((p as u32 * 1000 / 127) as u16)
    }
}

/// PIDF priority (thousandths) → XMPP priority: `round(q*127)` (product.md).
pub fn milli_to_priority(milli: u16) -> Option<i8> {
    if milli > 1000 {
        return None;
    }
    Some(((milli as u32 * 127 + 500) / 1000) as i8)
}

/// A tuple id that is a valid `xs:ID` for a resource: `ID-` + the resource with
/// characters outside NCName replaced by their XEP-0106-like escape (product.md: `ID-<escaped resource>`).
pub fn tuple_id_for(resource: &str) -> String {
    let mut id = String::from("ID-");
    for c in resource.chars() {
        if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
            id.push(c);
        } else {
            id.push_str(&format!("_{:x}_", c as u32));
        }
    }
    id
}

fn activity_for(show: Show) -> Option<Activity> {
    match show {
        Show::Away | Show::Xa => Some(Activity::Away),
        Show::Dnd => Some(Activity::Busy),
        Show::Chat => None,
    }
}

/// Builds the full-state PIDF for one XMPP user: one tuple per known resource
/// (`ID-<resource>`, contact `<contact_uri>;gr=<resource>`), show both as
/// `<show xmlns='jabber:client'>` and as RPID activities of the most available resource.
pub fn xmpp_to_pidf(
    entity: &str,
    contact_uri: &str,
    resources: &[ResourcePresence],
) -> PresenceDoc {
    let mut doc = PresenceDoc {
        entity: entity.to_string(),
        ..Default::default()
    };
    for r in resources {
        let mut t = Tuple {
            id: tuple_id_for(&r.resource),
            basic: Some(if r.available {
                Basic::Open
            } else {
                Basic::Closed
            }),
            ..Default::default()
        };
        if r.available {
            t.show = r.show;
            t.contact = Some(Contact {
                uri: format!("{contact_uri};gr={}", escape_localpart(&r.resource)),
                priority_milli: r.priority.and_then(priority_to_milli),
            });
        }
        t.notes = r.statuses.clone();
        doc.tuples.push(t);
    }
    if let Some(top) = most_available(resources) {
        let activities: Vec<Activity> = top.show.and_then(activity_for).into_iter().collect();
        let user_input = top.idle_since.as_ref().map(|since| UserInput {
            idle: true,
            idle_threshold: None,
            last_input: Some(since.clone()),
        });
        if !activities.is_empty() || user_input.is_some() {
            doc.person = Some(Person {
                id: "p1".into(),
                activities,
                user_input,
                ..Default::default()
            });
        }
    }
    doc
}

/// The available resource with the highest priority, then the most available show.
pub fn most_available(resources: &[ResourcePresence]) -> Option<&ResourcePresence> {
    fn rank(s: Option<Show>) -> u8 {
        match s {
            Some(Show::Chat) => 5,
            None => 4,
            Some(Show::Away) => 3,
            Some(Show::Xa) => 2,
            Some(Show::Dnd) => 1,
        }
    }
    resources
        .iter()
        .filter(|r| r.available)
        .max_by_key(|r| (r.priority.unwrap_or(0), rank(r.show)))
}

/// RPID activities → XMPP show, used when a tuple has no `jabber:client` show (product.md).
pub fn show_from_activities(activities: &[Activity]) -> Option<Show> {
    let mut best = None;
    for a in activities {
        let s = match a {
            Activity::Busy | Activity::OnThePhone | Activity::Meeting => Some(Show::Dnd),
            Activity::Vacation | Activity::Holiday => Some(Show::Xa),
            Activity::Away => Some(Show::Away),
            _ => None,
        };
        if s.is_some() && best.is_none() {
            best = s;
        }
    }
    best
}

/// The XMPP resource a SIP tuple stands for: the contact's `gr` parameter, else the tuple
/// id (without our `ID-` prefix), else `sip` (product.md).
pub fn resource_for_tuple(t: &Tuple) -> String {
    if let Some(c) = &t.contact {
        for p in c.uri.split(';').skip(1) {
            if let Some(v) = p.strip_prefix("gr=") {
                if !v.is_empty() {
                    return percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned();
                }
            }
        }
    }
    if !t.id.is_empty() {
        return t.id.strip_prefix("ID-").unwrap_or(&t.id).to_string();
    }
    "sip".to_string()
}

/// Maps a PIDF document to per-resource XMPP presence (RFC 8048 §7.6): basic open →
/// available, closed → unavailable; `jabber:client` show wins, else RPID; notes →
/// statuses; contact priority → priority. Tuples without `<basic>` are skipped.
pub fn pidf_to_xmpp(doc: &PresenceDoc) -> Vec<ResourcePresence> {
    let person_show = doc
        .person
        .as_ref()
        .and_then(|p| show_from_activities(&p.activities));
    let person_idle = doc
        .person
        .as_ref()
        .and_then(|p| p.user_input.as_ref())
        .filter(|u| u.idle)
        .and_then(|u| u.last_input.clone());
    let mut out = Vec::new();
    for t in &doc.tuples {
        let Some(basic) = t.basic else { continue };
        let available = basic == Basic::Open;
        let mut statuses = t.notes.clone();
        if statuses.is_empty() {
            statuses = doc.notes.clone();
        }
        let mut r = ResourcePresence {
            resource: resource_for_tuple(t),
            available,
            show: None,
            statuses,
            priority: None,
            idle_since: None,
        };
        if available {
            r.show = t.show.or(person_show);
            r.priority = t
                .contact
                .as_ref()
                .and_then(|c| c.priority_milli)
                .and_then(milli_to_priority);
            r.idle_since = person_idle.clone();
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// standards.md §16 case 45: priority 5 → 0.039.
    #[test]
    fn priority_five_maps_to_0_039() {
        assert_eq!(priority_to_milli(5), Some(39));
    }

    /// Case 46.
    #[test]
    fn negative_priority_is_not_mapped_and_127_is_one() {
        assert_eq!(priority_to_milli(-1), None);
        assert_eq!(priority_to_milli(127), Some(1000));
        assert_eq!(priority_to_milli(1), Some(7));
        assert_eq!(priority_to_milli(126), Some(992));
    }

    /// Case 55.
    #[test]
    fn half_priority_maps_to_64_and_out_of_range_is_ignored() {
        assert_eq!(milli_to_priority(500), Some(64));
        assert_eq!(milli_to_priority(1700), None);
    }

    /// Case 47.
    #[test]
    fn resource_starting_with_digit_gets_valid_tuple_id() {
        assert_eq!(tuple_id_for("1phone"), "ID-1phone");
    }

    /// Case 48.
    #[test]
    fn unavailable_resource_becomes_closed_tuple() {
        let doc = xmpp_to_pidf(
            "pres:anna@xmpp.example",
            "sip:anna@xmpp.example",
            &[ResourcePresence::unavailable("desk")],
        );
        assert_eq!(doc.tuples[0].id, "ID-desk");
        assert_eq!(doc.tuples[0].basic, Some(Basic::Closed));
    }

    #[test]
    fn away_show_is_written_as_jabber_show_and_rpid_away() {
        let mut r = ResourcePresence::available("desk");
        r.show = Some(Show::Away);
        let doc = xmpp_to_pidf("pres:anna@xmpp.example", "sip:anna@xmpp.example", &[r]);
        assert_eq!(doc.tuples[0].show, Some(Show::Away));
        assert_eq!(doc.person.unwrap().activities, vec![Activity::Away]);
    }

    #[test]
    fn rpid_on_the_phone_without_jabber_show_reads_as_dnd() {
        let doc = PresenceDoc {
            entity: "pres:ben@sip.example".into(),
            tuples: vec![Tuple {
                id: "t1".into(),
                basic: Some(Basic::Open),
                ..Default::default()
            }],
            person: Some(Person {
                id: "p".into(),
                activities: vec![Activity::OnThePhone],
                ..Default::default()
            }),
            notes: vec![],
        };
        assert_eq!(pidf_to_xmpp(&doc)[0].show, Some(Show::Dnd));
    }

    #[test]
    fn tuple_resource_comes_from_gruu_then_id() {
        let mut t = Tuple {
            id: "ID-x".into(),
            basic: Some(Basic::Open),
            ..Default::default()
        };
        assert_eq!(resource_for_tuple(&t), "x");
        t.contact = Some(Contact {
            uri: "sip:ben@sip.example;gr=ph7".into(),
            priority_milli: None,
        });
        assert_eq!(resource_for_tuple(&t), "ph7");
        t.contact = None;
        t.id.clear();
        assert_eq!(resource_for_tuple(&t), "sip");
    }
}
