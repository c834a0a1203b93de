//! The bridge: XMPP ⇄ SIP presence translation after RFC 8048 (pua_xmpp's job, done
//! right). Policy only: it reaches SIP through the PUA service and the notifier, and XMPP
//! through stanzas it hands to the engine.
//!
//! Two directions, each keyed by a pair of addresses:
//! - **X2S** (an XMPP user watches a SIP user, RFC 8048 §5.2): the gateway is the SIP
//!   subscriber. One SIP subscription per (bare JID, SIP contact), shared by resources.
//!   `subscribed` goes out on the first `active` NOTIFY, never on a 200 (§5.2.1); the
//!   authorization ends only on 403/489/603 or `terminated;reason=rejected|noresource`
//!   (standards.md §7.4), never on a SIP expiry.
//! - **S2X** (a SIP user watches an XMPP user, §5.3), `notifier` mode: the gateway is the
//!   notifier; a new SIP subscription is `pending` until the XMPP user says `subscribed`.
//!   Several SIP dialogs of one watcher share one XMPP subscription (product.md).
//!   `publish` mode (OpenSIPS/Kamailio compatible) instead PUBLISHes each XMPP user's
//!   aggregated presence and learns SIP watchers from `presence.winfo`.
//!
//! Authorizations are stored (both directions) so a restart loses none; the PUA and the
//! notifier store their own dialogs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{Module, ModuleCtx, ModuleId};
use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::presence::pidf::build_pidf;
use crate::core::presence::watcherinfo::WatcherStatus;
use crate::core::presence::{Basic, Body, Note, PresenceDoc, Tuple, PIDF};
use crate::core::pua::{
    PuaEvent, PublicationId, PublishRequest, SubscribeRequest, SubscriptionEnd, SubscriptionId,
};
use crate::core::routing::{DomainMatch, Route};
use crate::core::sip::headers::{SubState, TerminationReason};
use crate::core::sip::message::Method;
use crate::core::sip::notifier::{
    Body as NotifierBody, Decision, EndReason, NotifierDialogId, NotifierDialogView, NotifierEvent,
    StateChange, SubscribeInfo,
};
use crate::core::xmpp::address::{DomainMap, JidParts, MapError};
use crate::core::xmpp::disco::{component_iq_reply, ComponentInfo};
use crate::core::xmpp::error_map;
use crate::core::xmpp::presence_map::{pidf_to_xmpp, xmpp_to_pidf, ResourcePresence};
use crate::core::xmpp::stanza::{
    Condition, ErrorType, Presence, PresenceType, Stanza, StanzaError,
};

/// How XMPP users' presence reaches SIP (product.md, Deployment modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipSideMode {
    /// The gateway is the notifier for XMPP users' SIP URIs (RFC 8048, default).
    Notifier,
    /// The gateway PUBLISHes to a presence server and watches `presence.winfo`.
    Publish,
}

/// The bridge's slice of the configuration.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub domains: Vec<DomainMap>,
    pub mode: SipSideMode,
    /// Most SIP contacts one XMPP user may watch through the gateway (X2S pairs).
    pub max_subscriptions_per_user: usize,
}

/// One X2S pair: an XMPP user watching a SIP contact.
#[derive(Clone, Debug)]
struct X2sPair {
    /// The XMPP user (bare).
    user: JidParts,
    /// The SIP contact as a JID under the component domain (bare).
    contact: JidParts,
    /// The SIP contact's URI (Request-URI of our SUBSCRIBE).
    sip_uri: String,
    /// The XMPP user's SIP URI (From of our SUBSCRIBE).
    user_uri: String,
    /// `subscribed` has been sent: the authorization exists (RFC 8048 §5.2.1).
    authorized: bool,
    sub: Option<SubscriptionId>,
    /// The contact's last presence per resource, from NOTIFY bodies.
    resources: BTreeMap<String, ResourcePresence>,
    /// The XMPP user cancelled; `unsubscribed` follows the answer to Expires: 0.
    unsubscribing: bool,
    /// A probe waiting for the outcome of its SUBSCRIBE (its id mirrors into errors).
    probe_id: Option<Option<String>>,
}

/// One S2X pair: a SIP watcher (as a component JID) watching an XMPP user.
#[derive(Clone, Debug)]
struct S2xPair {
    watcher: JidParts,
    user: JidParts,
    /// The XMPP user said `subscribed`.
    authorized: bool,
    /// A `subscribe` went to the XMPP user and is unanswered.
    asked: bool,
    /// The XMPP user's presence per resource, as broadcast to this watcher.
    resources: BTreeMap<String, ResourcePresence>,
    dialogs: BTreeSet<NotifierDialogId>,
}

/// Publish mode: one XMPP user's aggregated presence and winfo watch.
#[derive(Clone, Debug, Default)]
struct Published {
    user_uri: String,
    resources: BTreeMap<String, ResourcePresence>,
    publication: Option<PublicationId>,
    last_body: Option<Vec<u8>>,
    winfo: Option<SubscriptionId>,
    /// SIP watchers already turned into one XMPP `subscribe` each.
    asked: BTreeSet<String>,
}

/// A stored authorization row (StoreTable::Authorizations).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "dir", rename_all = "lowercase")]
enum AuthRow {
    X2s {
        user: String,
        contact: String,
        sip_uri: String,
        user_uri: String,
        authorized: bool,
        sub: Option<u64>,
    },
    S2x {
        watcher: String,
        user: String,
        authorized: bool,
        asked: bool,
    },
}

type PairKey = (String, String);

/// Timer token for the pacing of probes after a (re)connect.
const RESYNC_TIMER: u64 = 1;
/// Probes sent per resync step; steps are `PROBE_BATCH × restore_pace` apart, so the
/// probes after a reconnect go at the configured restore rate instead of all at once.
const PROBE_BATCH: usize = 50;

pub struct BridgeModule {
    cfg: BridgeConfig,
    info: ComponentInfo,
    x2s: BTreeMap<PairKey, X2sPair>,
    x2s_by_sub: HashMap<SubscriptionId, PairKey>,
    s2x: BTreeMap<PairKey, S2xPair>,
    s2x_by_dialog: HashMap<NotifierDialogId, PairKey>,
    published: BTreeMap<String, Published>,
    by_publication: HashMap<PublicationId, String>,
    by_winfo: HashMap<SubscriptionId, String>,
    link_up: bool,
    /// The next S2X pair to probe in a paced resync (`None`: from the first).
    resync_from: Option<PairKey>,
}

impl BridgeModule {
    pub fn new(cfg: BridgeConfig) -> Self {
        BridgeModule {
            cfg,
            info: ComponentInfo::default(),
            x2s: BTreeMap::new(),
            x2s_by_sub: HashMap::new(),
            s2x: BTreeMap::new(),
            s2x_by_dialog: HashMap::new(),
            published: BTreeMap::new(),
            by_publication: HashMap::new(),
            by_winfo: HashMap::new(),
            link_up: false,
            resync_from: None,
        }
    }

    fn map_for_component(&self, domain: &str) -> Option<&DomainMap> {
        self.cfg
            .domains
            .iter()
            .find(|d| d.component_domain.eq_ignore_ascii_case(domain))
    }

    fn map_for_xmpp(&self, domain: &str) -> Option<&DomainMap> {
        self.cfg
            .domains
            .iter()
            .find(|d| d.xmpp_domain.eq_ignore_ascii_case(domain))
    }

    fn is_component_domain(&self, domain: &str) -> bool {
        self.map_for_component(domain).is_some()
    }

    /// The S2X pair a SIP SUBSCRIBE addresses: (watcher JID, XMPP user), or the SIP code
    /// to refuse it with (product.md: unmappable → 404; `sips:` → 416; foreign watcher → 403).
    fn s2x_pair_for(
        &self,
        watcher_uri: &str,
        presentity_uri: &str,
    ) -> Result<(JidParts, JidParts), u16> {
        let mut last = 404;
        for map in &self.cfg.domains {
            match map.sip_uri_to_xmpp_user(presentity_uri) {
                Ok(user) => {
                    let watcher = map.sip_user_to_jid(watcher_uri).map_err(|_| 403u16)?;
                    let watcher = JidParts {
                        resource: None,
                        ..watcher
                    };
                    return Ok((watcher, user));
                }
                Err(MapError::Sips) => return Err(416),
                Err(_) => last = 404,
            }
        }
        Err(last)
    }

    /// Persists the X2S pair `key` as it is now (deleted when gone).
    fn x2s_store(&self, ctx: &mut ModuleCtx<'_>, key: &PairKey) {
        let row = self.x2s.get(key).map(|p| {
            let row = AuthRow::X2s {
                user: p.user.bare(),
                contact: p.contact.bare(),
                sip_uri: p.sip_uri.clone(),
                user_uri: p.user_uri.clone(),
                authorized: p.authorized,
                sub: p.sub.map(|s| s.0),
            };
            (p.user.bare(), row)
        });
        store_auth_row(ctx, x2s_row_key(key), row);
    }

    /// Persists the S2X pair `key` as it is now (deleted when gone).
    fn s2x_store(&self, ctx: &mut ModuleCtx<'_>, key: &PairKey) {
        let row = self.s2x.get(key).map(|p| {
            let row = AuthRow::S2x {
                watcher: p.watcher.bare(),
                user: p.user.bare(),
                authorized: p.authorized,
                asked: p.asked,
            };
            (p.user.bare(), row)
        });
        store_auth_row(ctx, s2x_row_key(key), row);
    }

    // ----- X2S: the XMPP user watches a SIP contact -----

    fn x2s_subscribe(&mut self, ctx: &mut ModuleCtx<'_>, p: &Presence) {
        let user = bare(&p.from);
        let contact = bare(&p.to);
        let key = (user.bare(), contact.bare());
        if let Some(pair) = self.x2s.get(&key) {
            if pair.authorized {
                // Idempotent: the authorization stands (RFC 6121 §3.1.3 server would
                // auto-reply too); make sure a dialog is alive.
                ctx.send_stanza(presence(&contact, &user, PresenceType::Subscribed));
            }
            self.x2s_ensure_dialog(ctx, &key);
            return;
        }
        let Some(pair) = self.new_x2s_pair(ctx, p, &user, &contact) else {
            return;
        };
        self.x2s.insert(key.clone(), pair);
        self.x2s_ensure_dialog(ctx, &key);
        self.x2s_store(ctx, &key);
    }

    fn new_x2s_pair(
        &self,
        ctx: &mut ModuleCtx<'_>,
        p: &Presence,
        user: &JidParts,
        contact: &JidParts,
    ) -> Option<X2sPair> {
        // Keys are (user, contact): the user's pairs are one range, not a scan of all.
        let bare = user.bare();
        let count = self
            .x2s
            .range((bare.clone(), String::new())..)
            .take_while(|((u, _), _)| *u == bare)
            .count();
        if count >= self.cfg.max_subscriptions_per_user {
            tracing::warn!(user = %user, "too many bridged contacts; subscribe refused");
            reply_error(
                ctx,
                p,
                Condition::PolicyViolation,
                Some("too many SIP contacts"),
            );
            return None;
        }
        let (Some(cmap), Some(umap)) = (
            self.map_for_component(&contact.domain),
            self.map_for_xmpp(&user.domain),
        ) else {
            reply_error(ctx, p, Condition::ItemNotFound, None);
            return None;
        };
        let sip_uri = match cmap.jid_to_sip_user(contact) {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(contact = %contact, error = %e, "unmappable SIP contact");
                reply_error(ctx, p, Condition::JidMalformed, Some(&e.to_string()));
                return None;
            }
        };
        let user_uri = match umap.xmpp_user_to_sip_uri(user) {
            Ok(u) => u,
            Err(e) => {
                reply_error(ctx, p, Condition::JidMalformed, Some(&e.to_string()));
                return None;
            }
        };
        Some(X2sPair {
            user: user.clone(),
            contact: contact.clone(),
            sip_uri,
            user_uri,
            authorized: false,
            sub: None,
            resources: BTreeMap::new(),
            unsubscribing: false,
            probe_id: None,
        })
    }

    /// Starts the pair's SIP subscription unless one is alive (the PUA refreshes it and
    /// re-subscribes on transient failures by itself).
    fn x2s_ensure_dialog(&mut self, ctx: &mut ModuleCtx<'_>, key: &PairKey) {
        let Some(pair) = self.x2s.get_mut(key) else {
            return;
        };
        if pair.sub.is_some_and(|s| ctx.pua.subscription(s).is_some()) {
            return;
        }
        let id = ctx.subscribe(SubscribeRequest {
            owner: ModuleId::Bridge,
            presentity: pair.sip_uri.clone(),
            watcher: pair.user_uri.clone(),
            contact: None,
            event: "presence".into(),
            expires: None,
            refresh_until_unsubscribed: false,
            target: None,
            next_hop: None,
        });
        if let Some(old) = pair.sub.replace(id) {
            self.x2s_by_sub.remove(&old);
        }
        self.x2s_by_sub.insert(id, key.clone());
        self.x2s_store(ctx, key);
    }

    fn x2s_unsubscribe(&mut self, ctx: &mut ModuleCtx<'_>, p: &Presence) {
        let key = (bare(&p.from).bare(), bare(&p.to).bare());
        let Some(pair) = self.x2s.get_mut(&key) else {
            // Nothing to cancel; confirm so the roster settles (RFC 8048 §5.2.3).
            ctx.send_stanza(presence(
                &bare(&p.to),
                &bare(&p.from),
                PresenceType::Unsubscribed,
            ));
            return;
        };
        pair.unsubscribing = true;
        let live = pair.sub.filter(|s| ctx.pua.subscription(*s).is_some());
        match live {
            Some(id) if ctx.unsubscribe(id) => {}
            _ => self.x2s_finish(ctx, &key, true),
        }
    }

    /// Ends the pair: `unavailable` for the resources we announced, then `unsubscribed`
    /// when `tell` (the authorization is gone), and forgets it.
    fn x2s_finish(&mut self, ctx: &mut ModuleCtx<'_>, key: &PairKey, tell: bool) {
        let Some(pair) = self.x2s.remove(key) else {
            return;
        };
        if let Some(s) = pair.sub {
            self.x2s_by_sub.remove(&s);
        }
        for (res, r) in &pair.resources {
            if r.available {
                ctx.send_stanza(presence(
                    &full(&pair.contact, res),
                    &pair.user,
                    PresenceType::Unavailable,
                ));
            }
        }
        if tell {
            ctx.send_stanza(presence(
                &pair.contact,
                &pair.user,
                PresenceType::Unsubscribed,
            ));
        }
        self.x2s_store(ctx, key);
    }

    fn x2s_probe(&mut self, ctx: &mut ModuleCtx<'_>, p: &Presence) {
        let user = bare(&p.from);
        let contact = bare(&p.to);
        let key = (user.bare(), contact.bare());
        if !self.x2s.contains_key(&key) {
            // The server probes only contacts the user is subscribed to: the pair was
            // lost (or predates us); re-create it (product.md, probe handling).
            let Some(pair) = self.new_x2s_pair(ctx, p, &user, &contact) else {
                return;
            };
            self.x2s.insert(key.clone(), pair);
            self.x2s_store(ctx, &key);
        }
        let pair = self.x2s.get_mut(&key).expect("inserted above");
        pair.probe_id = Some(p.id.clone());
        // Answer from what we know now; a fresh NOTIFY follows the (re)subscription.
        if pair.authorized {
            let mut any = false;
            for (res, r) in &pair.resources {
                if r.available {
                    any = true;
                    ctx.send_stanza(resource_presence(&pair.contact, &pair.user, res, r));
                }
            }
            if !any && !pair.resources.is_empty() {
                ctx.send_stanza(presence(
                    &pair.contact,
                    &pair.user,
                    PresenceType::Unavailable,
                ));
            }
        }
        self.x2s_ensure_dialog(ctx, &key);
    }

    fn x2s_on_notify(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        key: &PairKey,
        state: &SubState,
        body: &Body,
    ) {
        let Some(pair) = self.x2s.get_mut(key) else {
            return;
        };
        let active = matches!(state, SubState::Active { .. });
        if !active {
            // Pending: neutral, nothing to XMPP (standards.md case 17); terminated is
            // handled by the end of the subscription.
            return;
        }
        pair.probe_id = None;
        let mut changed = false;
        if !pair.authorized {
            pair.authorized = true;
            changed = true;
            ctx.send_stanza(presence(
                &pair.contact,
                &pair.user,
                PresenceType::Subscribed,
            ));
        }
        if let Body::Pidf(doc) = body {
            let now: BTreeMap<String, ResourcePresence> = pidf_to_xmpp(doc)
                .into_iter()
                .map(|r| (r.resource.clone(), r))
                .collect();
            // A tuple missing from a full-state document is gone (product.md).
            for (res, old) in &pair.resources {
                if old.available && !now.contains_key(res) {
                    ctx.send_stanza(presence(
                        &full(&pair.contact, res),
                        &pair.user,
                        PresenceType::Unavailable,
                    ));
                }
            }
            for (res, r) in &now {
                if pair.resources.get(res) != Some(r) {
                    ctx.send_stanza(resource_presence(&pair.contact, &pair.user, res, r));
                }
            }
            pair.resources = now;
        }
        // An empty body keeps the previous document (RFC 3856 §6.8, case 53).
        if changed {
            self.x2s_store(ctx, key);
        }
    }

    fn x2s_on_result(&mut self, ctx: &mut ModuleCtx<'_>, key: &PairKey, code: u16) {
        let Some(pair) = self.x2s.get_mut(key) else {
            return;
        };
        if pair.unsubscribing && (200..300).contains(&code) {
            // RFC 8048 §5.2.3: on the 200 to Expires: 0, `unsubscribed`.
            self.x2s_finish(ctx, key, true);
            return;
        }
        if code >= 300 && !matches!(code, 403 | 489 | 603) {
            if let Some(id) = pair.probe_id.take() {
                let e = error_map::sip_to_xmpp(code, None);
                send_error_presence(ctx, &pair.contact, &pair.user, id, e.condition, None);
            }
        }
    }

    fn x2s_on_end(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        key: &PairKey,
        end: &SubscriptionEnd,
        retrying: bool,
    ) {
        let permanent = match end {
            SubscriptionEnd::Response { code, .. } => matches!(code, 403 | 489 | 603),
            SubscriptionEnd::Notified(SubState::Terminated { reason, .. }) => {
                matches!(
                    reason,
                    Some(TerminationReason::Rejected | TerminationReason::Noresource)
                )
            }
            _ => false,
        };
        let Some(pair) = self.x2s.get_mut(key) else {
            return;
        };
        if permanent || pair.unsubscribing || matches!(end, SubscriptionEnd::Unsubscribed) {
            // Only these end an authorization (standards.md §7.4).
            self.x2s_finish(ctx, key, true);
            return;
        }
        if let (Some(id), SubscriptionEnd::Response { code, .. }) = (pair.probe_id.take(), end) {
            let e = error_map::sip_to_xmpp(*code, None);
            send_error_presence(ctx, &pair.contact, &pair.user, id, e.condition, None);
        }
        if !retrying {
            // The dialog is gone for now; the authorization stays. Presence is unknown
            // until the next probe re-creates the dialog.
            if let Some(s) = pair.sub.take() {
                self.x2s_by_sub.remove(&s);
            }
            let gone: Vec<String> = pair
                .resources
                .iter()
                .filter(|(_, r)| r.available)
                .map(|(k, _)| k.clone())
                .collect();
            for res in gone {
                ctx.send_stanza(presence(
                    &full(&pair.contact, &res),
                    &pair.user,
                    PresenceType::Unavailable,
                ));
            }
            pair.resources.clear();
            self.x2s_store(ctx, key);
        }
    }

    // ----- S2X: a SIP user watches an XMPP user (notifier mode) -----

    fn s2x_key(watcher: &JidParts, user: &JidParts) -> PairKey {
        (watcher.bare(), user.bare())
    }

    fn s2x_body(pair: &S2xPair) -> Option<NotifierBody> {
        if pair.resources.is_empty() {
            return None;
        }
        let resources: Vec<ResourcePresence> = pair.resources.values().cloned().collect();
        Some(pidf_body(&pair.user, &resources))
    }

    fn s2x_on_created(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        dialog: NotifierDialogId,
        view: &NotifierDialogView,
    ) {
        let Ok((watcher, user)) = self.s2x_pair_for(&view.watcher, &view.presentity) else {
            tracing::warn!(watcher = %view.watcher, presentity = %view.presentity, "notifier dialog without a mappable pair");
            return;
        };
        let key = Self::s2x_key(&watcher, &user);
        let pair = self.s2x.entry(key.clone()).or_insert_with(|| S2xPair {
            watcher: watcher.clone(),
            user: user.clone(),
            authorized: false,
            asked: false,
            resources: BTreeMap::new(),
            dialogs: BTreeSet::new(),
        });
        pair.dialogs.insert(dialog);
        self.s2x_by_dialog.insert(dialog, key.clone());
        if !pair.authorized && !pair.asked {
            // RFC 8048 §5.3.1: ask the XMPP user; one request per watcher, however many
            // SIP dialogs it holds.
            pair.asked = true;
            ctx.send_stanza(presence(&watcher, &user, PresenceType::Subscribe));
        }
        self.s2x_store(ctx, &key);
    }

    fn s2x_on_ended(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        dialog: NotifierDialogId,
        reason: &EndReason,
    ) {
        let Some(key) = self.s2x_by_dialog.remove(&dialog) else {
            return;
        };
        let Some(pair) = self.s2x.get_mut(&key) else {
            return;
        };
        pair.dialogs.remove(&dialog);
        if pair.authorized && pair.dialogs.is_empty() && !matches!(reason, EndReason::Terminated(_))
        {
            // The watcher stopped watching: only `unavailable` (RFC 8048 §5.3.3), never
            // `unsubscribe`: the authorization stays.
            ctx.send_stanza(presence(
                &pair.watcher,
                &pair.user,
                PresenceType::Unavailable,
            ));
        }
    }

    fn s2x_on_polled(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        watcher_uri: &str,
        presentity: &str,
        had_state: bool,
    ) {
        if had_state {
            return;
        }
        let Ok((watcher, user)) = self.s2x_pair_for(watcher_uri, presentity) else {
            return;
        };
        let key = Self::s2x_key(&watcher, &user);
        // A probe before the subscription request is answered makes Prosody drop the
        // request (architecture.md): only probe when no request is outstanding.
        if self.s2x.get(&key).is_some_and(|p| p.asked && !p.authorized) {
            return;
        }
        ctx.send_stanza(presence(&watcher, &user, PresenceType::Probe));
    }

    fn s2x_on_consent(&mut self, ctx: &mut ModuleCtx<'_>, p: &Presence, granted: bool) {
        let user = bare(&p.from);
        let watcher = bare(&p.to);
        let key = Self::s2x_key(&watcher, &user);
        if granted {
            let pair = self.s2x.entry(key.clone()).or_insert_with(|| S2xPair {
                watcher: watcher.clone(),
                user: user.clone(),
                authorized: false,
                asked: false,
                resources: BTreeMap::new(),
                dialogs: BTreeSet::new(),
            });
            pair.asked = false;
            if !pair.authorized {
                pair.authorized = true;
                let body = Self::s2x_body(pair);
                let dialogs: Vec<NotifierDialogId> = pair.dialogs.iter().copied().collect();
                for d in dialogs {
                    ctx.notify(d, Some(StateChange::Activate), body.clone());
                }
            }
            self.s2x_store(ctx, &key);
        } else if let Some(pair) = self.s2x.remove(&key) {
            for d in pair.dialogs {
                self.s2x_by_dialog.remove(&d);
                ctx.notify(
                    d,
                    Some(StateChange::Terminate {
                        reason: TerminationReason::Rejected,
                        retry_after: None,
                    }),
                    None,
                );
            }
            self.s2x_store(ctx, &key);
        }
    }

    fn s2x_on_presence(&mut self, ctx: &mut ModuleCtx<'_>, p: &Presence) {
        let user = bare(&p.from);
        let watcher = bare(&p.to);
        let key = Self::s2x_key(&watcher, &user);
        let Some(pair) = self.s2x.get_mut(&key) else {
            // Directed presence to a SIP user has no SIP mapping (product.md).
            tracing::debug!(from = %p.from, to = %p.to, "presence without an S2X authorization; not mapped");
            return;
        };
        apply_presence(&mut pair.resources, p);
        if !pair.authorized {
            return;
        }
        let Some(body) = Self::s2x_body(pair) else {
            return;
        };
        let dialogs: Vec<NotifierDialogId> = pair.dialogs.iter().copied().collect();
        for d in dialogs {
            ctx.notify(d, None, Some(body.clone()));
        }
    }

    // ----- publish mode -----

    fn publish_on_presence(&mut self, ctx: &mut ModuleCtx<'_>, p: &Presence) {
        let user = bare(&p.from);
        let Some(map) = self.map_for_xmpp(&user.domain) else {
            return;
        };
        let Ok(user_uri) = map.xmpp_user_to_sip_uri(&user) else {
            return;
        };
        let entry = self.published.entry(user.bare()).or_default();
        entry.user_uri = user_uri.clone();
        apply_presence(&mut entry.resources, p);
        let any_available = entry.resources.values().any(|r| r.available);
        let resources: Vec<ResourcePresence> = entry.resources.values().cloned().collect();
        let body = pidf_body(&user, &resources).bytes.to_vec();
        if !any_available {
            // Removed when the last resource goes unavailable (issue: publish mode).
            if entry.publication.take().is_some() {
                let _ = ctx.publish(PublishRequest {
                    owner: ModuleId::Bridge,
                    presentity: user_uri,
                    event: "presence".into(),
                    content_type: None,
                    body: None,
                    expires: Some(0),
                    etag: None,
                    extra_headers: Vec::new(),
                    instance: None,
                    sender: None,
                });
            }
            entry.last_body = None;
            entry.resources.clear();
            return;
        }
        // The XMPP server sends one copy per contact: publish once per change of state,
        // not once per stanza (anchors.md §7: N PUBLISHes per stanza).
        if entry.last_body.as_deref() == Some(body.as_slice()) {
            return;
        }
        entry.last_body = Some(body.clone());
        match ctx.publish(PublishRequest {
            owner: ModuleId::Bridge,
            presentity: user_uri.clone(),
            event: "presence".into(),
            content_type: Some(PIDF.into()),
            body: Some(body),
            expires: None,
            etag: None,
            extra_headers: Vec::new(),
            instance: None,
            sender: None,
        }) {
            Ok(id) => {
                entry.publication = Some(id);
                self.by_publication.insert(id, user.bare());
            }
            Err(e) => tracing::warn!(user = %user, error = %e, "publish refused"),
        }
        if entry.winfo.is_none() {
            let id = ctx.subscribe(SubscribeRequest {
                owner: ModuleId::Bridge,
                presentity: user_uri.clone(),
                watcher: user_uri,
                contact: None,
                event: "presence.winfo".into(),
                expires: None,
                refresh_until_unsubscribed: false,
                target: None,
                next_hop: None,
            });
            entry.winfo = Some(id);
            self.by_winfo.insert(id, user.bare());
        }
    }

    fn publish_on_winfo(&mut self, ctx: &mut ModuleCtx<'_>, user_key: &str, body: &Body) {
        let Body::Watcherinfo(info) = body else {
            return;
        };
        let Ok(user) = JidParts::parse(user_key) else {
            return;
        };
        let Some(map) = self.map_for_xmpp(&user.domain).cloned() else {
            return;
        };
        let Some(entry) = self.published.get_mut(user_key) else {
            return;
        };
        let full_state = matches!(info.state, crate::core::presence::DocState::Full);
        let mut seen = BTreeSet::new();
        for list in &info.lists {
            for w in &list.watchers {
                let uri = w.uri.trim().to_string();
                match w.status {
                    WatcherStatus::Pending | WatcherStatus::Waiting => {
                        seen.insert(uri.clone());
                        if entry.asked.insert(uri.clone()) {
                            // Exactly one XMPP request per pending SIP watcher.
                            match map.sip_user_to_jid(&uri) {
                                Ok(jid) => ctx.send_stanza(presence(
                                    &bare(&jid),
                                    &user,
                                    PresenceType::Subscribe,
                                )),
                                Err(e) => {
                                    tracing::info!(watcher = %uri, error = %e, "unmappable winfo watcher")
                                }
                            }
                        }
                    }
                    WatcherStatus::Active => {
                        seen.insert(uri.clone());
                        entry.asked.insert(uri);
                    }
                    WatcherStatus::Terminated => {
                        entry.asked.remove(&uri);
                    }
                }
            }
        }
        if full_state {
            entry.asked.retain(|u| seen.contains(u));
        }
    }
}

impl Module for BridgeModule {
    fn id(&self) -> ModuleId {
        ModuleId::Bridge
    }

    fn routes(&self) -> Vec<Route> {
        // The bridge maps any address itself (404 for unmappable ones); a module serving
        // named domains (the presence agent) wins for those.
        match self.cfg.mode {
            SipSideMode::Notifier => vec![Route::new(
                Method::Subscribe,
                Some("presence"),
                DomainMatch::Any,
            )],
            SipSideMode::Publish => Vec::new(),
        }
    }

    fn notifier_body_types(&self, _package: &str) -> Vec<String> {
        vec![PIDF.into()]
    }

    fn authorize(&self, info: &SubscribeInfo<'_>) -> Decision {
        let presentity = if info.presentity.is_empty() {
            info.to_uri
        } else {
            info.presentity
        };
        match self.s2x_pair_for(info.watcher, presentity) {
            Err(code) => Decision::reject(code),
            Ok((watcher, user)) => {
                let key = Self::s2x_key(&watcher, &user);
                match self.s2x.get(&key) {
                    Some(p) if p.authorized => Decision::active(Self::s2x_body(p)),
                    _ => Decision::pending(),
                }
            }
        }
    }

    fn final_body(
        &self,
        dialog: &NotifierDialogView,
        _cached: Option<&NotifierBody>,
    ) -> Option<NotifierBody> {
        // RFC 8048 §5.3.3: the final NOTIFY of a cancelled subscription shows `closed`.
        let (_, user) = self
            .s2x_pair_for(&dialog.watcher, &dialog.presentity)
            .ok()?;
        let key = (
            self.s2x_pair_for(&dialog.watcher, &dialog.presentity)
                .ok()?
                .0
                .bare(),
            user.bare(),
        );
        let mut resources: Vec<ResourcePresence> = self
            .s2x
            .get(&key)
            .map(|p| {
                p.resources
                    .keys()
                    .map(|r| ResourcePresence::unavailable(r))
                    .collect()
            })
            .unwrap_or_default();
        if resources.is_empty() {
            resources.push(ResourcePresence::unavailable("sip"));
        }
        Some(pidf_body(&user, &resources))
    }

    fn on_notifier_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &NotifierEvent) {
        match event {
            NotifierEvent::Created { dialog, view } => self.s2x_on_created(ctx, *dialog, view),
            NotifierEvent::Ended { dialog, reason, .. } => self.s2x_on_ended(ctx, *dialog, reason),
            NotifierEvent::Polled {
                watcher,
                presentity,
                had_state,
                ..
            } => self.s2x_on_polled(ctx, watcher, presentity, *had_state),
            NotifierEvent::Refreshed { .. } => {}
        }
    }

    fn on_pua_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &PuaEvent) {
        match event {
            PuaEvent::Notify { id, state, body } => {
                if let Some(key) = self.x2s_by_sub.get(id).cloned() {
                    self.x2s_on_notify(ctx, &key, state, body);
                } else if let Some(user) = self.by_winfo.get(id).cloned() {
                    self.publish_on_winfo(ctx, &user, body);
                }
            }
            PuaEvent::SubscribeResult { id, code, .. } => {
                if let Some(key) = self.x2s_by_sub.get(id).cloned() {
                    self.x2s_on_result(ctx, &key, *code);
                }
            }
            PuaEvent::SubscriptionEnded { id, end, retry_at } => {
                if let Some(key) = self.x2s_by_sub.get(id).cloned() {
                    self.x2s_on_end(ctx, &key, end, retry_at.is_some());
                } else if let Some(user) = self.by_winfo.get(id).cloned() {
                    if retry_at.is_none() {
                        self.by_winfo.remove(id);
                        if let Some(e) = self.published.get_mut(&user) {
                            e.winfo = None;
                        }
                    }
                }
            }
            PuaEvent::PublishResult {
                id, code, alive, ..
            } => {
                if !alive {
                    if let Some(user) = self.by_publication.remove(id) {
                        tracing::info!(user = %user, code, "publication ended");
                        if let Some(e) = self.published.get_mut(&user) {
                            if e.publication == Some(*id) {
                                e.publication = None;
                                e.last_body = None;
                            }
                        }
                    }
                }
            }
        }
    }

    fn on_stanza(&mut self, ctx: &mut ModuleCtx<'_>, stanza: &Stanza) -> bool {
        match stanza {
            Stanza::Iq(iq) => {
                if !self.is_component_domain(&iq.to.domain) {
                    return false;
                }
                if let Some(reply) = component_iq_reply(&iq.to.domain, iq, &self.info) {
                    ctx.send_stanza(reply);
                }
                true
            }
            Stanza::Message(_) => false,
            Stanza::Presence(p) => {
                if !self.is_component_domain(&p.to.domain) {
                    return false;
                }
                if p.kind == PresenceType::Error {
                    tracing::debug!(from = %p.from, to = %p.to, error = ?p.error, "presence error from XMPP");
                    return true;
                }
                if self.map_for_xmpp(&p.from.domain).is_none() {
                    // Serve configured domains only (RFC 8048 §8, case 77): no SIP traffic.
                    tracing::info!(from = %p.from, "presence from an unserved domain refused");
                    reply_error(
                        ctx,
                        p,
                        Condition::Forbidden,
                        Some("domain not served by this gateway"),
                    );
                    return true;
                }
                if p.to.local.is_none() {
                    // Presence to the component itself (e.g. a probe of the gateway).
                    if p.kind == PresenceType::Probe {
                        ctx.send_stanza(presence(
                            &bare(&p.to),
                            &bare(&p.from),
                            PresenceType::Available,
                        ));
                    }
                    return true;
                }
                match p.kind {
                    PresenceType::Subscribe => self.x2s_subscribe(ctx, p),
                    PresenceType::Unsubscribe => self.x2s_unsubscribe(ctx, p),
                    PresenceType::Probe => self.x2s_probe(ctx, p),
                    PresenceType::Subscribed | PresenceType::Unsubscribed => match self.cfg.mode {
                        SipSideMode::Notifier => {
                            self.s2x_on_consent(ctx, p, p.kind == PresenceType::Subscribed)
                        }
                        // SIP cannot carry consent to a presence server (RFC 3857 §1);
                        // the server's own policy decides (anchors.md §2.3).
                        SipSideMode::Publish => {}
                    },
                    PresenceType::Available | PresenceType::Unavailable => match self.cfg.mode {
                        SipSideMode::Notifier => self.s2x_on_presence(ctx, p),
                        SipSideMode::Publish => self.publish_on_presence(ctx, p),
                    },
                    PresenceType::Error => {}
                }
                true
            }
        }
    }

    fn on_xmpp_link(&mut self, ctx: &mut ModuleCtx<'_>, up: bool) {
        self.link_up = up;
        if up {
            // After (re)connecting, learn current presence of every XMPP user a SIP
            // watcher is authorized for (product.md).
            self.resync_from = None;
            ctx.set_timer(RESYNC_TIMER, ctx.now);
        }
    }

    fn on_timer(&mut self, ctx: &mut ModuleCtx<'_>, token: u64) {
        if token == RESYNC_TIMER && self.link_up {
            use std::ops::Bound;
            let first_step = self.resync_from.is_none();
            let start = match self.resync_from.take() {
                Some(k) => Bound::Included(k),
                None => Bound::Unbounded,
            };
            let mut pending = self
                .s2x
                .range((start, Bound::Unbounded))
                .filter(|(_, p)| p.authorized);
            for (_, pair) in pending.by_ref().take(PROBE_BATCH) {
                ctx.send_stanza(presence(&pair.watcher, &pair.user, PresenceType::Probe));
            }
            if let Some((next, _)) = pending.next() {
                self.resync_from = Some(next.clone());
                let step = ctx.svc.config.restore_pace * PROBE_BATCH as u32;
                ctx.set_timer(RESYNC_TIMER, ctx.now + step);
            }
            if first_step {
                // The XMPP server may have restarted: a user's login probe while the link
                // was down was bounced, and presence we announced before is forgotten.
                // Announce the SIP contacts' known presence again (an offline user's server
                // drops it).
                for pair in self.x2s.values().filter(|p| p.authorized) {
                    for (res, r) in pair.resources.iter().filter(|(_, r)| r.available) {
                        ctx.send_stanza(resource_presence(&pair.contact, &pair.user, res, r));
                    }
                }
            }
        }
    }

    fn on_shutdown(&mut self, ctx: &mut ModuleCtx<'_>) {
        // `unavailable` to every XMPP user from every SIP contact we speak for.
        for pair in self.x2s.values() {
            for (res, r) in &pair.resources {
                if r.available {
                    ctx.send_stanza(presence(
                        &full(&pair.contact, res),
                        &pair.user,
                        PresenceType::Unavailable,
                    ));
                }
            }
        }
    }

    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        for row in rows
            .iter()
            .filter(|r| r.table == StoreTable::Authorizations && r.owner == "bridge")
        {
            match serde_json::from_value::<AuthRow>(row.data.clone()) {
                Ok(AuthRow::X2s {
                    user,
                    contact,
                    sip_uri,
                    user_uri,
                    authorized,
                    sub,
                }) => {
                    let (Ok(u), Ok(c)) = (JidParts::parse(&user), JidParts::parse(&contact)) else {
                        continue;
                    };
                    let key = (u.bare(), c.bare());
                    let sub = sub
                        .map(SubscriptionId)
                        .filter(|s| ctx.pua.subscription(*s).is_some());
                    if let Some(s) = sub {
                        self.x2s_by_sub.insert(s, key.clone());
                    }
                    self.x2s.insert(
                        key,
                        X2sPair {
                            user: u,
                            contact: c,
                            sip_uri,
                            user_uri,
                            authorized,
                            sub,
                            resources: BTreeMap::new(),
                            unsubscribing: false,
                            probe_id: None,
                        },
                    );
                }
                Ok(AuthRow::S2x {
                    watcher,
                    user,
                    authorized,
                    asked,
                }) => {
                    let (Ok(w), Ok(u)) = (JidParts::parse(&watcher), JidParts::parse(&user)) else {
                        continue;
                    };
                    self.s2x.insert(
                        (w.bare(), u.bare()),
                        S2xPair {
                            watcher: w,
                            user: u,
                            authorized,
                            asked,
                            resources: BTreeMap::new(),
                            dialogs: BTreeSet::new(),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(key = %row.key, error = %e, "unreadable bridge row skipped")
                }
            }
        }
        // Re-attach the notifier dialogs the notifier restored.
        let views = ctx.svc.notifier.views(ctx.now);
        for v in views.into_iter().filter(|v| v.owner == "bridge") {
            let Some(id) = NotifierDialogId::parse(&v.id) else {
                continue;
            };
            if let Ok((w, u)) = self.s2x_pair_for(&v.watcher, &v.presentity) {
                let key = Self::s2x_key(&w, &u);
                if let Some(p) = self.s2x.get_mut(&key) {
                    p.dialogs.insert(id);
                    self.s2x_by_dialog.insert(id, key);
                }
            }
        }
    }
}

/// Writes (or, for `None`, deletes) one authorization row; `subject` is the XMPP user.
fn store_auth_row(ctx: &mut ModuleCtx<'_>, key: String, row: Option<(String, AuthRow)>) {
    let table = StoreTable::Authorizations;
    let op = match row {
        None => StoreOp::Delete { table, key },
        Some((subject, row)) => StoreOp::Put {
            table,
            key,
            owner: ModuleId::Bridge.as_str().into(),
            subject,
            expires_at: None,
            data: serde_json::to_value(row).unwrap_or_default(),
        },
    };
    ctx.store(op);
}

fn x2s_row_key(key: &PairKey) -> String {
    format!("x2s|{}|{}", key.0, key.1)
}

fn s2x_row_key(key: &PairKey) -> String {
    format!("s2x|{}|{}", key.0, key.1)
}

fn bare(j: &JidParts) -> JidParts {
    JidParts {
        resource: None,
        ..j.clone()
    }
}

fn full(j: &JidParts, resource: &str) -> JidParts {
    JidParts {
        resource: Some(resource.to_string()),
        ..bare(j)
    }
}

fn presence(from: &JidParts, to: &JidParts, kind: PresenceType) -> Stanza {
    Stanza::Presence(Presence::new(from.clone(), to.clone(), kind))
}

/// The XMPP presence for one SIP tuple, from `contact/resource`.
fn resource_presence(
    contact: &JidParts,
    user: &JidParts,
    res: &str,
    r: &ResourcePresence,
) -> Stanza {
    let kind = if r.available {
        PresenceType::Available
    } else {
        PresenceType::Unavailable
    };
    let mut p = Presence::new(full(contact, res), user.clone(), kind);
    if r.available {
        p.show = r.show;
        p.priority = r.priority;
        p.idle_since = r.idle_since.clone();
    }
    p.statuses = r
        .statuses
        .iter()
        .map(|n| (n.lang.clone(), n.text.clone()))
        .collect();
    p.lang = r.statuses.iter().find_map(|n| n.lang.clone());
    Stanza::Presence(p)
}

/// Records one XMPP presence stanza into a per-resource table. Presence from a bare JID
/// (no resource) stands for all resources when unavailable, else for resource `""`.
fn apply_presence(resources: &mut BTreeMap<String, ResourcePresence>, p: &Presence) {
    let available = p.kind == PresenceType::Available;
    let res = p.from.resource.clone().unwrap_or_default();
    if !available && p.from.resource.is_none() {
        for r in resources.values_mut() {
            r.available = false;
            r.show = None;
            r.priority = None;
        }
        return;
    }
    let statuses: Vec<Note> = p
        .statuses
        .iter()
        .map(|(lang, text)| Note {
            lang: lang.clone().or_else(|| p.lang.clone()),
            text: text.clone(),
        })
        .collect();
    resources.insert(
        res.clone(),
        ResourcePresence {
            resource: if res.is_empty() {
                "default".into()
            } else {
                res
            },
            available,
            show: if available { p.show } else { None },
            statuses,
            priority: if available { p.priority } else { None },
            idle_since: p.idle_since.clone(),
        },
    );
}

/// The full-state PIDF of an XMPP user (product.md: one tuple per known resource).
fn pidf_body(user: &JidParts, resources: &[ResourcePresence]) -> NotifierBody {
    let uri = crate::core::xmpp::address::jid_to_sip_uri(&bare(user));
    let entity = uri.replacen("sip:", "pres:", 1);
    let doc: PresenceDoc = if resources.is_empty() {
        PresenceDoc {
            entity,
            tuples: vec![Tuple {
                id: "ID-sip".into(),
                basic: Some(Basic::Closed),
                ..Default::default()
            }],
            ..Default::default()
        }
    } else {
        xmpp_to_pidf(&entity, &uri, resources)
    };
    let mut body = NotifierBody::new(PIDF, build_pidf(&doc).into_bytes());
    // xml:lang → Content-Language (RFC 8048 §7.5): the language of the statuses.
    body.language = resources
        .iter()
        .flat_map(|r| r.statuses.iter())
        .find_map(|n| n.lang.clone());
    body
}

fn reply_error(ctx: &mut ModuleCtx<'_>, p: &Presence, condition: Condition, text: Option<&str>) {
    if let Some(reply) =
        Stanza::Presence(p.clone()).error_reply(condition, text.map(str::to_string))
    {
        ctx.send_stanza(reply);
    }
}

/// A presence error from the SIP contact to the user (standards.md §4.2, cases 56–61),
/// mirroring the probe's id.
fn send_error_presence(
    ctx: &mut ModuleCtx<'_>,
    contact: &JidParts,
    user: &JidParts,
    id: Option<String>,
    condition_name: &str,
    text: Option<String>,
) {
    let condition = Condition::parse(condition_name).unwrap_or(Condition::UndefinedCondition);
    let mut p = Presence::new(contact.clone(), user.clone(), PresenceType::Error);
    p.id = id;
    let mut err = StanzaError::new(condition);
    err.kind = ErrorType::parse(error_map::default_type(condition_name)).unwrap_or(err.kind);
    err.text = text;
    p.error = Some(err);
    ctx.send_stanza(Stanza::Presence(p));
}
