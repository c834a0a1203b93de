//! The pure core: no sockets, no tokio, no clock reads, no system randomness.
//! Time and ids are inputs (`time`, `ids`); effects are outputs (`engine::Output`).

pub mod engine;
pub mod ids;
pub mod local_site;
pub mod modules;
pub mod persist;
pub mod presence;
pub mod presence_state;
pub mod pua;
pub mod registrar;
pub mod routing;
pub mod sip;
pub mod time;
pub mod timers;
pub mod users;
pub mod watcher_rules;
pub mod xmpp;
