//! The neutral presence model (RFC 3863 PIDF + RFC 4479 data model + RFC 4480 RPID), the
//! one vocabulary PIDF bodies and XMPP presence are translated through.
//!
//! Owner: bodies. Fields may be added; existing ones are relied upon by the PUA service
//! and the bridge.

/// A presence document about one presentity: services (tuples), the person, notes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceDoc {
    /// The `entity` attribute (`pres:anna@xmpp.example`), mandatory in PIDF.
    pub entity: String,
    pub tuples: Vec<Tuple>,
    /// RFC 4479 `<dm:person>` with its RPID elements, if any.
    pub person: Option<Person>,
    /// Presence-level `<note>`s.
    pub notes: Vec<Note>,
}

/// `<basic>` (RFC 3863 §4.1.4).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Basic {
    Open,
    Closed,
}

/// XMPP `<show/>` values (RFC 6121 §4.7.2.1), carried in PIDF as
/// `<show xmlns='jabber:client'>` inside `<status>` (RFC 8048 §7.5).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Show {
    Away,
    Chat,
    Dnd,
    Xa,
}

impl Show {
    /// Only the four RFC 6121 values; anything else (`busy`) is not a show (case 52).
    pub fn parse(s: &str) -> Option<Show> {
        match s.trim() {
            "away" => Some(Show::Away),
            "chat" => Some(Show::Chat),
            "dnd" => Some(Show::Dnd),
            "xa" => Some(Show::Xa),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Show::Away => "away",
            Show::Chat => "chat",
            Show::Dnd => "dnd",
            Show::Xa => "xa",
        }
    }
}

/// Human-readable text with its language (`xml:lang`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub lang: Option<String>,
    pub text: String,
}

/// `<contact priority>`: priority in thousandths, 0..=1000 (RFC 3863 §4.1.5: a decimal
/// 0..1 with at most three decimals; out-of-range values are ignored when parsing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub uri: String,
    pub priority_milli: Option<u16>,
}

/// A PIDF tuple: one service (for the bridge, one XMPP resource or SIP contact).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuple {
    pub id: String,
    pub basic: Option<Basic>,
    /// `<show xmlns='jabber:client'>` inside `<status>`.
    pub show: Option<Show>,
    pub contact: Option<Contact>,
    pub notes: Vec<Note>,
    /// `<timestamp>` as written (RFC 3339).
    pub timestamp: Option<String>,
    /// `<dm:deviceID>` tying the service to a device.
    pub device_id: Option<String>,
}

/// RPID activities (RFC 4480 §3.2) the gateway maps; others are kept by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Activity {
    Appointment,
    Away,
    Breakfast,
    Busy,
    Dinner,
    Holiday,
    InTransit,
    LookingForWork,
    /// `lunch` is in RFC 4480's text but not its schema: read, never written.
    Lunch,
    Meal,
    Meeting,
    OnThePhone,
    Performance,
    PermanentAbsence,
    Playing,
    Presentation,
    Shopping,
    Sleeping,
    Spectator,
    Steering,
    Travel,
    Tv,
    Unknown,
    Vacation,
    Working,
    Worship,
    /// `<other>text</other>` or an element we do not know.
    Other(String),
}

/// RPID `<user-input>` (RFC 4480 §3.13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInput {
    pub idle: bool,
    pub idle_threshold: Option<u32>,
    /// RFC 3339 time of the last input, as written.
    pub last_input: Option<String>,
}

/// RFC 4479 `<dm:person>` with the RPID elements we read or write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Person {
    pub id: String,
    pub activities: Vec<Activity>,
    pub user_input: Option<UserInput>,
    pub notes: Vec<Note>,
    pub timestamp: Option<String>,
}
