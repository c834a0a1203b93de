//! The registrar and location service (RFC 3261 §10.3), pure.
//!
//! [`Registrar::on_register`] applies one REGISTER to the bindings of an address-of-record
//! and returns what to answer, what changed ([`BindingEvent`]) and what to make durable
//! ([`StoreOp`]). Time is an input: bindings expire through [`Registrar::handle_timeout`] at
//! [`Registrar::next_deadline`]; nothing here reads a clock.
//!
//! Steps 1–3 of RFC 3261 §10.3 (the domain is served, `Require` is understood, the request
//! is authenticated and authorised for the AOR) and step 4 (the AOR from the To URI) are the
//! caller's. This module does steps 5–8.
//!
//! Choices the RFC leaves open, documented here once:
//! - **Out-of-order REGISTER** (same Call-ID, CSeq not higher than the stored binding's,
//!   step 7 "the update MUST be aborted and the request fails"): `400 Invalid CSeq Number`,
//!   the answer Kamailio gives, so phones see the same code behind either registrar.
//! - **Too many contacts** for one AOR: `403 Too Many Contacts`. A 503 would invite the phone
//!   to retry the same request, which can never succeed until a binding is removed. The
//!   limit is only enforced when a request *adds* bindings, so an AOR restored with more
//!   bindings than a lowered limit can still refresh and remove them.
//! - **Malformed `Expires`** (header or Contact parameter): taken as 3600 s, as RFC 3261
//!   §20.19 asks, then capped like any other value.
//! - **423** is given only when `0 < expires < min_expires` *and* `expires < 3600`
//!   (§10.3 step 6 "greater than zero AND smaller than one hour AND less than a
//!   registrar-configured minimum"); with a minimum above one hour, a shorter request is
//!   granted as asked.
//! - **Binding identity**: a Contact with both `+sip.instance` and `reg-id` matches the
//!   binding with the same pair (RFC 5626 §6: the flow replaces the old one even if the URI
//!   changed); any other Contact matches by URI equivalence (RFC 3261 §19.1.4, see
//!   [`uri_equivalent`]).
//! - **Bindings already past their expiry** when a REGISTER for their AOR arrives are
//!   expired first: the outcome then carries their `Expired` events and store write
//!   whatever its status, since time, not the request, removed them.
//! - The 200 lists every binding as `Contact: <uri>;expires=N[;q=…][;+sip.instance=…][;reg-id=…]`
//!   (step 8, RFC 5626 §6) and echoes the request's `Path` (RFC 3327 §5.3). It carries no
//!   `Date` (step 8's SHOULD): the driver may add it, the core formats no calendar time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::persist::{StoreOp, StoreTable, StoredRow};
use super::sip::headers::{parse_delta_seconds, CSeq, NameAddr};
use super::sip::uri::SipUri;
use super::sip::{Peer, Request};
use super::time::Timestamp;

/// The `owner` of the registrar's store rows.
pub const STORE_OWNER: &str = "registrar";

/// Where a set of bindings comes from (product.md, "Where the secondary modules get their
/// input"). Each source is its own [`Registrar`] with its own store rows; only
/// [`BindingSource::Registrar`] is authoritative (answers REGISTER for routing).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BindingSource {
    /// The embedded registrar (RFC 3261 §10.3).
    #[default]
    Registrar,
    /// REGISTER copies from a trusted proxy that stays the registrar (`t_replicate`).
    Copy,
    /// `reg` event notifications (RFC 3680) from an external registrar.
    RegEvent,
}

impl BindingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingSource::Registrar => "registrar",
            BindingSource::Copy => "copy",
            BindingSource::RegEvent => "reg_event",
        }
    }

    /// The store key of `aor`'s row: the bare AOR for the embedded registrar (rows written
    /// before sources existed keep working), prefixed by the source otherwise.
    fn row_key(self, aor: &str) -> String {
        match self {
            BindingSource::Registrar => aor.to_string(),
            other => format!("{}:{aor}", other.as_str()),
        }
    }

    /// The AOR of a row key of this source, if the key is one.
    fn aor_of_key(self, key: &str) -> Option<&str> {
        match self {
            BindingSource::Registrar => {
                (!key.starts_with("copy:") && !key.starts_with("reg_event:")).then_some(key)
            }
            other => key.strip_prefix(other.as_str())?.strip_prefix(':'),
        }
    }
}

/// What RFC 3261 §20.19 says a malformed Expires means.
const MALFORMED_EXPIRES: u32 = 3600;

/// One hour: the bound of the 423 rule (RFC 3261 §10.3 step 6).
const ONE_HOUR: u32 = 3600;

/// Registrar policy (RFC 3261 §10.3 step 6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shorter requested intervals (but above zero) get `423 Interval Too Brief`.
    pub min_expires: u32,
    /// Longer requested intervals are shortened to this.
    pub max_expires: u32,
    /// Granted when neither the Contact nor the request names an interval.
    pub default_expires: u32,
    /// Bindings one AOR may hold; a request that would go beyond gets 403.
    pub max_contacts_per_aor: usize,
}

/// A [`RegistrarConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistrarConfigError {
    #[error("min_expires ({min}) is above max_expires ({max})")]
    MinAboveMax { min: u32, max: u32 },
    #[error("default_expires ({default}) is outside min_expires..=max_expires ({min}..={max})")]
    DefaultOutOfRange { default: u32, min: u32, max: u32 },
    #[error("max_contacts_per_aor must be at least 1")]
    NoContacts,
}

impl RegistrarConfig {
    /// Checks the values fit together; the config layer calls this once. A default below
    /// the minimum would answer 423 to phones that asked for no interval at all.
    pub fn validate(&self) -> Result<(), RegistrarConfigError> {
        let (min, max, default) = (self.min_expires, self.max_expires, self.default_expires);
        if min > max {
            return Err(RegistrarConfigError::MinAboveMax { min, max });
        }
        if !(min..=max).contains(&default) {
            return Err(RegistrarConfigError::DefaultOutOfRange { default, min, max });
        }
        if self.max_contacts_per_aor == 0 {
            return Err(RegistrarConfigError::NoContacts);
        }
        Ok(())
    }
}

impl RegistrarConfig {
    /// The policy of bindings mirrored from another registrar, which already granted them:
    /// any interval up to `max_expires` (0: one hour), never 423, up to 100 contacts.
    pub fn mirror(max_expires: u32) -> Self {
        let max_expires = if max_expires == 0 {
            ONE_HOUR
        } else {
            max_expires
        };
        RegistrarConfig {
            min_expires: 0,
            max_expires,
            default_expires: max_expires.min(ONE_HOUR),
            max_contacts_per_aor: 100,
        }
    }
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts_per_aor: 10,
        }
    }
}

/// One contact address bound to an AOR (RFC 3261 §10.3 step 7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The address-of-record, `sip:user@domain` without parameters.
    pub aor: String,
    /// The Contact URI, as the phone wrote it (without the angle brackets).
    pub contact: String,
    /// The `q` parameter in thousandths (`q=0.5` → 500); `None` when the phone gave none.
    pub q: Option<u16>,
    /// When the binding lapses unless refreshed (wall-clock ms, kept across restarts).
    #[serde(rename = "expires_at_ms", with = "ts_millis")]
    pub expires_at: Timestamp,
    /// Call-ID and CSeq of the REGISTER that last wrote it: the step 7 ordering check.
    pub call_id: String,
    pub cseq: u32,
    /// Transport and address the REGISTER came from (`udp:192.0.2.1:5060`): where to reach
    /// a phone behind NAT when the Contact URI is not routable.
    pub source: String,
    /// `+sip.instance` (RFC 5626 §4.1), without the surrounding quotes.
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626 §4.2).
    pub reg_id: Option<u32>,
    pub user_agent: Option<String>,
    /// `Path` header values, in order (RFC 3327): the route back to the phone.
    pub path: Vec<String>,
}

/// `Timestamp` as integer milliseconds in the stored JSON.
mod ts_millis {
    use super::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.as_millis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        u64::deserialize(d).map(Timestamp::from_millis)
    }
}

/// What happened to a binding, for the modules that follow registrations (presence of a
/// phone, usrloc views). `Refreshed` carries the binding as it now is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingEvent {
    Added(Binding),
    Refreshed(Binding),
    /// Removed by a REGISTER (`expires=0`, `Contact: *`).
    Removed(Binding),
    /// Lapsed without a refresh.
    Expired(Binding),
}

impl BindingEvent {
    pub fn binding(&self) -> &Binding {
        match self {
            BindingEvent::Added(b)
            | BindingEvent::Refreshed(b)
            | BindingEvent::Removed(b)
            | BindingEvent::Expired(b) => b,
        }
    }
}

/// A [`BindingEvent`] with where it came from, as modules receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingChange {
    pub source: BindingSource,
    pub event: BindingEvent,
    /// The REGISTER copy carried the configured publish mark (pua_usrloc's
    /// `pua_set_publish()`); always `false` for other sources.
    pub marked: bool,
}

/// The answer to one REGISTER and its effects. The caller builds the response (with
/// `response_to`, a To tag, these `headers`), performs `store` before sending it, and hands
/// `events` to whoever follows registrations.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterOutcome {
    pub status: u16,
    pub reason: String,
    /// Headers to add, in order: one `Contact` per binding on a 200 (plus `Path`),
    /// `Min-Expires` on a 423.
    pub headers: Vec<(String, String)>,
    pub events: Vec<BindingEvent>,
    pub store: Vec<StoreOp>,
}

/// Bindings handed back by [`Registrar::restore`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// `Expired` for every binding that lapsed while the gateway was down.
    pub events: Vec<BindingEvent>,
    /// Rewrites of rows that lost bindings (Put) or all of them (Delete).
    pub store: Vec<StoreOp>,
    /// Rows that could not be read, with the reason; left in the store untouched, since a
    /// newer version may have written them.
    pub rejected: Vec<(String, String)>,
}

/// The stored form of one AOR's row.
#[derive(Serialize, Deserialize)]
struct StoredAor {
    bindings: Vec<Binding>,
}

/// A refusal: nothing changes.
struct Refusal {
    status: u16,
    reason: &'static str,
    headers: Vec<(String, String)>,
}

impl Refusal {
    fn new(status: u16, reason: &'static str) -> Self {
        Refusal {
            status,
            reason,
            headers: Vec::new(),
        }
    }
}

/// One entry of the working copy while a request is applied.
struct Slot {
    binding: Binding,
    /// Index in the AOR's list before the request, `None` when this request added it.
    origin: Option<usize>,
    /// Written by this request: later Contacts of the same request replace it without the
    /// CSeq check (they carry the same Call-ID and CSeq).
    touched: bool,
}

/// One Contact of the request, parsed.
struct ContactSpec {
    uri: String,
    expires: u32,
    q: Option<u16>,
    instance: Option<String>,
    reg_id: Option<u32>,
}

/// The location service: bindings per AOR, ordered so iteration (and store output) is
/// deterministic.
#[derive(Clone, Debug, Default)]
pub struct Registrar {
    cfg: RegistrarConfig,
    source: BindingSource,
    aors: BTreeMap<String, Vec<Binding>>,
    /// (earliest expiry, AOR) of every AOR, and each AOR's entry: the next deadline and
    /// the AORs due without a scan of every binding (kept in step by `set_aor`).
    deadlines: std::collections::BTreeSet<(Timestamp, String)>,
    earliest: std::collections::HashMap<String, Timestamp>,
}

impl Registrar {
    pub fn new(cfg: RegistrarConfig) -> Self {
        Self::for_source(cfg, BindingSource::Registrar)
    }

    /// The bindings of one source (see [`BindingSource`]); rows and restore are per source.
    pub fn for_source(cfg: RegistrarConfig, source: BindingSource) -> Self {
        Registrar {
            cfg,
            source,
            aors: BTreeMap::new(),
            deadlines: Default::default(),
            earliest: Default::default(),
        }
    }

    pub fn source(&self) -> BindingSource {
        self.source
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// Applies a REGISTER (RFC 3261 §10.3 steps 5–8). `aor` is the normalised To URI
    /// (`sip:user@domain`, no parameters): the caller has checked the domain is served and
    /// authenticated the request. A refused request (any status but 200) changes no
    /// binding.
    pub fn on_register(
        &mut self,
        now: Timestamp,
        aor: &str,
        req: &Request,
        source: Peer,
    ) -> RegisterOutcome {
        let mut events = Vec::new();
        let mut store = Vec::new();
        self.expire_aor(now, aor, &mut events, &mut store);
        match self.plan(now, aor, req, source) {
            Err(refusal) => RegisterOutcome {
                status: refusal.status,
                reason: refusal.reason.to_string(),
                headers: refusal.headers,
                events,
                store,
            },
            Ok((list, changes)) => {
                if !changes.is_empty() {
                    events.extend(changes);
                    // A later write of the same row replaces the expiry write above.
                    let key = self.source.row_key(aor);
                    store.retain(|op| !op_is_for(op, &key));
                    self.set_aor(aor, list);
                    store.push(self.row_op(aor));
                }
                let mut headers: Vec<(String, String)> = self
                    .bindings(aor)
                    .into_iter()
                    .map(|b| ("Contact".to_string(), contact_value(b, now)))
                    .collect();
                // RFC 3327 §5.3: the registrar echoes the Path it stored.
                headers.extend(
                    req.headers
                        .get_all("Path")
                        .into_iter()
                        .map(|p| ("Path".to_string(), p.to_string())),
                );
                RegisterOutcome {
                    status: 200,
                    reason: "OK".to_string(),
                    headers,
                    events,
                    store,
                }
            }
        }
    }

    /// The new list for `aor` and the events, or why the request is refused.
    fn plan(
        &self,
        now: Timestamp,
        aor: &str,
        req: &Request,
        source: Peer,
    ) -> Result<(Vec<Binding>, Vec<BindingEvent>), Refusal> {
        let call_id = req
            .headers
            .get("Call-ID")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(Refusal::new(400, "Missing Call-ID"))?;
        let cseq = req
            .headers
            .get("CSeq")
            .ok_or(Refusal::new(400, "Missing CSeq"))
            .and_then(|v| CSeq::parse(v).map_err(|_| Refusal::new(400, "Bad CSeq")))?
            .seq;
        let existing: &[Binding] = self.aors.get(aor).map(Vec::as_slice).unwrap_or(&[]);
        let contacts = req.headers.get_all("Contact");
        let header_expires = req
            .headers
            .get("Expires")
            .map(|v| parse_delta_seconds("Expires", v).unwrap_or(MALFORMED_EXPIRES));

        // Step 5: no Contact, a query.
        if contacts.is_empty() {
            return Ok((existing.to_vec(), Vec::new()));
        }

        // Step 6: `Contact: *` only alone and with `Expires: 0`; it removes every binding
        // that passes the step 7 ordering check, or none.
        if contacts.contains(&"*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(Refusal::new(400, "Invalid Request"));
            }
            if existing
                .iter()
                .any(|b| b.call_id == call_id && cseq <= b.cseq)
            {
                return Err(Refusal::new(400, "Invalid CSeq Number"));
            }
            let events = existing
                .iter()
                .cloned()
                .map(BindingEvent::Removed)
                .collect();
            return Ok((Vec::new(), events));
        }

        let mut specs = Vec::with_capacity(contacts.len());
        for value in contacts {
            specs.push(self.contact_spec(value, header_expires)?);
        }
        // Step 6: the 423 rule, checked for every Contact before anything is applied.
        if specs.iter().any(|s| self.too_brief(s.expires)) {
            return Err(Refusal {
                status: 423,
                reason: "Interval Too Brief",
                headers: vec![("Min-Expires".to_string(), self.cfg.min_expires.to_string())],
            });
        }

        let user_agent = req.headers.get("User-Agent").map(|u| u.trim().to_string());
        let path: Vec<String> = req
            .headers
            .get_all("Path")
            .into_iter()
            .map(str::to_string)
            .collect();
        let source = source.to_string();
        let mut slots: Vec<Slot> = existing
            .iter()
            .enumerate()
            .map(|(i, b)| Slot {
                binding: b.clone(),
                origin: Some(i),
                touched: false,
            })
            .collect();

        // Step 7.
        for spec in specs {
            let found = slots.iter().position(|s| same_binding(&s.binding, &spec));
            if let Some(i) = found {
                let b = &slots[i].binding;
                if !slots[i].touched && b.call_id == call_id && cseq <= b.cseq {
                    return Err(Refusal::new(400, "Invalid CSeq Number"));
                }
            }
            if spec.expires == 0 {
                if let Some(i) = found {
                    slots.remove(i);
                }
                continue;
            }
            let expires = spec.expires.min(self.cfg.max_expires);
            let binding = Binding {
                aor: aor.to_string(),
                contact: spec.uri,
                q: spec.q,
                expires_at: now + std::time::Duration::from_secs(u64::from(expires)),
                call_id: call_id.to_string(),
                cseq,
                source: source.clone(),
                instance: spec.instance,
                reg_id: spec.reg_id,
                user_agent: user_agent.clone(),
                path: path.clone(),
            };
            match found {
                Some(i) => {
                    slots[i].binding = binding;
                    slots[i].touched = true;
                }
                None => slots.push(Slot {
                    binding,
                    origin: None,
                    touched: true,
                }),
            }
        }

        if slots.len() > self.cfg.max_contacts_per_aor && slots.len() > existing.len() {
            return Err(Refusal::new(403, "Too Many Contacts"));
        }

        let mut events: Vec<BindingEvent> = existing
            .iter()
            .enumerate()
            .filter(|(i, _)| !slots.iter().any(|s| s.origin == Some(*i)))
            .map(|(_, b)| BindingEvent::Removed(b.clone()))
            .collect();
        for s in slots.iter().filter(|s| s.touched) {
            events.push(match s.origin {
                Some(_) => BindingEvent::Refreshed(s.binding.clone()),
                None => BindingEvent::Added(s.binding.clone()),
            });
        }
        Ok((slots.into_iter().map(|s| s.binding).collect(), events))
    }

    fn too_brief(&self, expires: u32) -> bool {
        expires > 0 && expires < self.cfg.min_expires && expires < ONE_HOUR
    }

    /// Parses one Contact element; the interval is the Contact's `expires`, else the
    /// request's `Expires`, else the default (step 6).
    fn contact_spec(
        &self,
        value: &str,
        header_expires: Option<u32>,
    ) -> Result<ContactSpec, Refusal> {
        let bad = || Refusal::new(400, "Bad Contact");
        let na = NameAddr::parse("Contact", value).map_err(|_| bad())?;
        SipUri::parse(&na.uri).map_err(|_| bad())?;
        let expires = match na.params.get("expires") {
            Some(Some(v)) => parse_delta_seconds("Contact", v).unwrap_or(MALFORMED_EXPIRES),
            Some(None) => MALFORMED_EXPIRES,
            None => header_expires.unwrap_or(self.cfg.default_expires),
        };
        let q = match na.params.get("q") {
            None => None,
            Some(v) => Some(parse_qvalue(v.unwrap_or("")).ok_or_else(bad)?),
        };
        let instance = na
            .params
            .value("+sip.instance")
            .map(|v| v.trim_matches('"').to_string());
        let reg_id = match na.params.get("reg-id") {
            None => None,
            Some(v) => Some(
                v.and_then(|v| v.parse::<u32>().ok())
                    .filter(|r| *r > 0)
                    .ok_or_else(bad)?,
            ),
        };
        Ok(ContactSpec {
            uri: na.uri,
            expires,
            q,
            instance,
            reg_id,
        })
    }

    /// The live bindings of `aor`, highest `q` first (no `q` ranks as 1.0); equal `q`s
    /// keep registration order.
    pub fn bindings(&self, aor: &str) -> Vec<&Binding> {
        let mut out: Vec<&Binding> = self
            .aors
            .get(aor)
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        out.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
        out
    }

    /// Every AOR with at least one binding, in order.
    pub fn aors(&self) -> impl Iterator<Item = &str> {
        self.aors.keys().map(String::as_str)
    }

    /// The earliest binding expiry: when to call [`Registrar::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Expires every binding whose time has come (`expires_at <= now`).
    pub fn handle_timeout(&mut self, now: Timestamp) -> (Vec<BindingEvent>, Vec<StoreOp>) {
        let due: Vec<String> = self
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, a)| a.clone())
            .collect();
        let mut events = Vec::new();
        let mut store = Vec::new();
        for aor in due {
            self.expire_aor(now, &aor, &mut events, &mut store);
        }
        (events, store)
    }

    /// Takes back the rows of `StoreTable::Bindings` owned by the registrar (others are
    /// ignored). Bindings keep their stored expiry; those already past it at `now` are
    /// dropped and reported as `Expired`.
    pub fn restore(&mut self, rows: &[StoredRow], now: Timestamp) -> Restored {
        let mut out = Restored::default();
        for row in rows {
            if row.table != StoreTable::Bindings || row.owner != STORE_OWNER {
                continue;
            }
            let Some(aor) = self.source.aor_of_key(&row.key).map(str::to_string) else {
                continue;
            };
            let stored: StoredAor = match serde_json::from_value(row.data.clone()) {
                Ok(s) => s,
                Err(e) => {
                    out.rejected.push((row.key.clone(), e.to_string()));
                    continue;
                }
            };
            if let Some(b) = stored.bindings.iter().find(|b| b.aor != aor) {
                out.rejected.push((
                    row.key.clone(),
                    format!("binding for {} in the row of another AOR", b.aor),
                ));
                continue;
            }
            let (live, lapsed): (Vec<Binding>, Vec<Binding>) = stored
                .bindings
                .into_iter()
                .partition(|b| b.expires_at > now);
            let changed = !lapsed.is_empty();
            out.events
                .extend(lapsed.into_iter().map(BindingEvent::Expired));
            self.set_aor(&aor, live);
            if changed {
                out.store.push(self.row_op(&aor));
            }
        }
        out
    }

    /// Sets the bindings of `aor` to `list` as another registrar reports them (a `reg`
    /// event document, RFC 3680 §5): bindings are matched by contact URI equivalence;
    /// those not in `list` are `Removed`, new ones `Added`, the others `Refreshed` when
    /// their expiry moved. With `only` set, bindings whose contact is not in `only` are
    /// left alone (a partial document names only the contacts it changes). Entries
    /// already past their expiry at `now` are ignored.
    pub fn mirror(
        &mut self,
        now: Timestamp,
        aor: &str,
        list: Vec<Binding>,
        only: Option<&[String]>,
    ) -> (Vec<BindingEvent>, Vec<StoreOp>) {
        let mut events = Vec::new();
        let mut store = Vec::new();
        self.expire_aor(now, aor, &mut events, &mut store);
        let existing = self.aors.get(aor).cloned().unwrap_or_default();
        let in_scope =
            |contact: &str| only.is_none_or(|o| o.iter().any(|c| uri_equivalent(c, contact)));
        let mut next: Vec<Binding> = existing
            .iter()
            .filter(|b| !in_scope(&b.contact))
            .cloned()
            .collect();
        for b in list.into_iter().filter(|b| b.expires_at > now) {
            if next.iter().any(|n| uri_equivalent(&n.contact, &b.contact)) {
                continue;
            }
            match existing
                .iter()
                .find(|e| uri_equivalent(&e.contact, &b.contact))
            {
                None => events.push(BindingEvent::Added(b.clone())),
                Some(e) if e.expires_at != b.expires_at => {
                    events.push(BindingEvent::Refreshed(b.clone()))
                }
                Some(_) => {}
            }
            next.push(b);
        }
        for e in &existing {
            if in_scope(&e.contact) && !next.iter().any(|n| uri_equivalent(&n.contact, &e.contact))
            {
                events.push(BindingEvent::Removed(e.clone()));
            }
        }
        if next != existing {
            let key = self.source.row_key(aor);
            store.retain(|op| !op_is_for(op, &key));
            self.set_aor(aor, next);
            store.push(self.row_op(aor));
        }
        (events, store)
    }

    /// Bindings over all AORs.
    pub fn binding_count(&self) -> usize {
        self.aors.values().map(Vec::len).sum()
    }

    fn expire_aor(
        &mut self,
        now: Timestamp,
        aor: &str,
        events: &mut Vec<BindingEvent>,
        store: &mut Vec<StoreOp>,
    ) {
        let Some(list) = self.aors.get_mut(aor) else {
            return;
        };
        if !list.iter().any(|b| b.expires_at <= now) {
            return;
        }
        let (live, lapsed): (Vec<Binding>, Vec<Binding>) = std::mem::take(list)
            .into_iter()
            .partition(|b| b.expires_at > now);
        events.extend(lapsed.into_iter().map(BindingEvent::Expired));
        self.set_aor(aor, live);
        store.push(self.row_op(aor));
    }

    fn set_aor(&mut self, aor: &str, list: Vec<Binding>) {
        if let Some(old) = self.earliest.remove(aor) {
            self.deadlines.remove(&(old, aor.to_string()));
        }
        if let Some(min) = list.iter().map(|b| b.expires_at).min() {
            self.earliest.insert(aor.to_string(), min);
            self.deadlines.insert((min, aor.to_string()));
        }
        if list.is_empty() {
            self.aors.remove(aor);
        } else {
            self.aors.insert(aor.to_string(), list);
        }
    }

    /// The row write for `aor` as it now is: Put with every binding, Delete when none.
    fn row_op(&self, aor: &str) -> StoreOp {
        match self.aors.get(aor) {
            None => StoreOp::Delete {
                table: StoreTable::Bindings,
                key: self.source.row_key(aor),
            },
            Some(list) => StoreOp::Put {
                table: StoreTable::Bindings,
                key: self.source.row_key(aor),
                owner: STORE_OWNER.to_string(),
                subject: aor.to_string(),
                expires_at: list.iter().map(|b| b.expires_at).max(),
                data: serde_json::to_value(StoredAor {
                    bindings: list.clone(),
                })
                .unwrap_or(serde_json::Value::Null),
            },
        }
    }
}

fn op_is_for(op: &StoreOp, row_key: &str) -> bool {
    match op {
        StoreOp::Put { table, key, .. } | StoreOp::Delete { table, key } => {
            *table == StoreTable::Bindings && key == row_key
        }
    }
}

/// Whether a Contact of the request names this binding (see the module notes).
fn same_binding(b: &Binding, spec: &ContactSpec) -> bool {
    match (&spec.instance, spec.reg_id, &b.instance, b.reg_id) {
        (Some(i), Some(r), Some(bi), Some(br)) => i == bi && r == br,
        (Some(_), Some(_), _, _) | (_, _, Some(_), Some(_)) => false,
        _ => uri_equivalent(&b.contact, &spec.uri),
    }
}

/// `<uri>;expires=N[;q=…][;+sip.instance=…][;reg-id=…]` for a 200 (RFC 3261 §10.3 step 8).
/// N is the time left, rounded up so a binding is never listed as expired while live.
fn contact_value(b: &Binding, now: Timestamp) -> String {
    let left_ms = b.expires_at.as_millis().saturating_sub(now.as_millis());
    let mut out = format!("<{}>;expires={}", b.contact, left_ms.div_ceil(1000));
    if let Some(q) = b.q {
        out.push_str(";q=");
        out.push_str(&format_qvalue(q));
    }
    if let Some(i) = &b.instance {
        out.push_str(&format!(";+sip.instance=\"{i}\""));
    }
    if let Some(r) = b.reg_id {
        out.push_str(&format!(";reg-id={r}"));
    }
    out
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (RFC 3261 §25.1) in
/// thousandths.
pub fn parse_qvalue(v: &str) -> Option<u16> {
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let milli = frac
        .bytes()
        .zip([100u16, 10, 1])
        .map(|(d, w)| u16::from(d - b'0') * w)
        .sum::<u16>();
    match int {
        "0" => Some(milli),
        "1" if milli == 0 => Some(1000),
        _ => None,
    }
}

/// The shortest qvalue text for thousandths (`500` → `0.5`, `1000` → `1`).
pub fn format_qvalue(milli: u16) -> String {
    match milli {
        1000.. => "1".to_string(),
        0 => "0".to_string(),
        m => format!("0.{:03}", m).trim_end_matches('0').to_string(),
    }
}

/// SIP URI equivalence (RFC 3261 §19.1.4): scheme and host compare case-insensitively, the
/// user (after unescaping) exactly, an absent port differs from an explicit one; the
/// `user`, `ttl`, `method`, `maddr` and `transport` parameters must agree when either URI
/// has them, other parameters only when both have them; URI headers must all agree.
/// Text that does not parse as a URI is equivalent only to identical text.
pub fn uri_equivalent(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (SipUri::parse(a), SipUri::parse(b)) else {
        return false;
    };
    if x.scheme != y.scheme
        || x.user != y.user
        || x.password != y.password
        || !x.host.eq_ignore_ascii_case(&y.host)
        || x.port != y.port
    {
        return false;
    }
    const MUST_AGREE: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
    let agree = |n: &str| match (x.params.get(n), y.params.get(n)) {
        (Some(p), Some(q)) => match (p, q) {
            (Some(p), Some(q)) => p.eq_ignore_ascii_case(q),
            (p, q) => p.is_none() && q.is_none(),
        },
        (None, None) => true,
        _ => MUST_AGREE.iter().all(|m| !m.eq_ignore_ascii_case(n)),
    };
    let names = x.params.0.iter().chain(y.params.0.iter()).map(|(n, _)| n);
    if !names.into_iter().all(|n| agree(n)) {
        return false;
    }
    let sorted = |u: &SipUri| {
        let mut h: Vec<(String, String)> = u
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        h.sort();
        h
    };
    sorted(&x) == sorted(&y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrar_config_validation() {
        assert_eq!(RegistrarConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut RegistrarConfig)| {
            let mut c = RegistrarConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.min_expires = 4000));
        assert!(bad(|c| c.default_expires = 30));
        assert!(bad(|c| c.default_expires = 7200));
        assert!(bad(|c| c.max_contacts_per_aor = 0));
    }

    #[test]
    fn registrar_qvalues_parse_and_print() {
        for (text, milli) in [
            ("0", 0),
            ("0.5", 500),
            ("0.25", 250),
            ("0.005", 5),
            ("1", 1000),
            ("1.000", 1000),
            (" 0.7 ", 700),
        ] {
            assert_eq!(parse_qvalue(text), Some(milli), "{text}");
        }
        for bad in ["", "2", "1.5", "0.1234", "0.a", "-0", "0..1", ".5"] {
            assert_eq!(parse_qvalue(bad), None, "{bad}");
        }
        assert_eq!(format_qvalue(500), "0.5");
        assert_eq!(format_qvalue(250), "0.25");
        assert_eq!(format_qvalue(5), "0.005");
        assert_eq!(format_qvalue(1000), "1");
        assert_eq!(format_qvalue(0), "0");
    }

    #[test]
    fn registrar_rfc3261_s19_1_4_uri_equivalence() {
        assert!(uri_equivalent(
            "sip:%61lice@ATLANTA.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(uri_equivalent(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(!uri_equivalent(
            "SIP:ALICE@AtLanTa.CoM",
            "sip:alice@atlanta.com"
        ));
        assert!(!uri_equivalent(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:5060"
        ));
        assert!(!uri_equivalent(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!uri_equivalent(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off"
        ));
        assert!(uri_equivalent(
            "sip:a@h?Subject=x&Priority=y",
            "sip:a@h?priority=y&subject=x"
        ));
        assert!(!uri_equivalent("sip:a@h?Subject=x", "sip:a@h"));
        assert!(!uri_equivalent("not a uri", "sip:a@h"));
    }
}
