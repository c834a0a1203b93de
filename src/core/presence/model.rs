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

impl Basic {
    /// `open` / `closed` (RFC 3863 §4.1.4); case and surrounding white space are forgiven.
    pub fn parse(s: &str) -> Option<Basic> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("open") {
            Some(Basic::Open)
        } else if s.eq_ignore_ascii_case("closed") {
            Some(Basic::Closed)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

impl Contact {
    /// Parses a `priority` attribute (RFC 3863 §4.1.5, the qvalue grammar of RFC 3261
    /// §25.1: `0[.ddd]` or `1[.000]`) into thousandths. Out of range (`1.7`), more than
    /// three decimals or anything else malformed is `None`, i.e. ignored (case 55).
    pub fn parse_priority(s: &str) -> Option<u16> {
        let s = s.trim();
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int: u16 = match int {
            "0" => 0,
            "1" => 1,
            _ => return None,
        };
        let mut milli: u16 = 0;
        for (i, b) in frac.bytes().enumerate() {
            let scale = [100, 10, 1][i];
            milli += u16::from(b - b'0') * scale;
        }
        let total = int * 1000 + milli;
        (total <= 1000).then_some(total)
    }

    /// Formats thousandths as the shortest decimal (`39` → `0.039`, `500` → `0.5`,
    /// `1000` → `1`); `None` above 1000, which PIDF cannot carry.
    pub fn format_priority(milli: u16) -> Option<String> {
        match milli {
            1000 => Some("1".to_string()),
            0 => Some("0".to_string()),
            m if m < 1000 => {
                let digits = format!("{m:03}");
                Some(format!("0.{}", digits.trim_end_matches('0')))
            }
            _ => None,
        }
    }
}

impl Activity {
    /// The activity an RPID element named `name` stands for (RFC 4480 §3.2). `lunch`
    /// (in the RFC text, not its schema) is read; an element we do not know is kept by name.
    pub fn from_rpid_name(name: &str) -> Activity {
        match name {
            "appointment" => Activity::Appointment,
            "away" => Activity::Away,
            "breakfast" => Activity::Breakfast,
            "busy" => Activity::Busy,
            "dinner" => Activity::Dinner,
            "holiday" => Activity::Holiday,
            "in-transit" => Activity::InTransit,
            "looking-for-work" => Activity::LookingForWork,
            "lunch" => Activity::Lunch,
            "meal" => Activity::Meal,
            "meeting" => Activity::Meeting,
            "on-the-phone" => Activity::OnThePhone,
            "performance" => Activity::Performance,
            "permanent-absence" => Activity::PermanentAbsence,
            "playing" => Activity::Playing,
            "presentation" => Activity::Presentation,
            "shopping" => Activity::Shopping,
            "sleeping" => Activity::Sleeping,
            "spectator" => Activity::Spectator,
            "steering" => Activity::Steering,
            "travel" => Activity::Travel,
            "tv" => Activity::Tv,
            "unknown" => Activity::Unknown,
            "vacation" => Activity::Vacation,
            "working" => Activity::Working,
            "worship" => Activity::Worship,
            other => Activity::Other(other.to_string()),
        }
    }

    /// The RPID element written for this activity. `Lunch` is written as `meal`, the
    /// schema's term for it; `Other` has no element name of its own (it is written as
    /// `<rpid:other>text</rpid:other>`).
    pub fn rpid_name(&self) -> Option<&'static str> {
        Some(match self {
            Activity::Appointment => "appointment",
            Activity::Away => "away",
            Activity::Breakfast => "breakfast",
            Activity::Busy => "busy",
            Activity::Dinner => "dinner",
            Activity::Holiday => "holiday",
            Activity::InTransit => "in-transit",
            Activity::LookingForWork => "looking-for-work",
            Activity::Lunch | Activity::Meal => "meal",
            Activity::Meeting => "meeting",
            Activity::OnThePhone => "on-the-phone",
            Activity::Performance => "performance",
            Activity::PermanentAbsence => "permanent-absence",
            Activity::Playing => "playing",
            Activity::Presentation => "presentation",
            Activity::Shopping => "shopping",
            Activity::Sleeping => "sleeping",
            Activity::Spectator => "spectator",
            Activity::Steering => "steering",
            Activity::Travel => "travel",
            Activity::Tv => "tv",
            Activity::Unknown => "unknown",
            Activity::Vacation => "vacation",
            Activity::Working => "working",
            Activity::Worship => "worship",
            Activity::Other(_) => return None,
        })
    }
}

impl Note {
    pub fn new(lang: Option<&str>, text: impl Into<String>) -> Note {
        Note {
            lang: lang.map(str::to_string),
            text: text.into(),
        }
    }
}

impl PresenceDoc {
    /// The tuple with this id, if any.
    pub fn tuple(&self, id: &str) -> Option<&Tuple> {
        self.tuples.iter().find(|t| t.id == id)
    }
}
