//! The pure core: no sockets, no tokio, no clock reads, no system randomness.
//! Time and ids are inputs (`time`, `ids`); effects are outputs (`engine::Output`).
//!
//! Layers, each depending only on those before it: vocabulary and protocol machines
//! (`time`, `ids`, `persist`, `presence`, `sip`, `xmpp`, `presence_state`, `registrar`,
//! `users`, `watcher_rules`, `handles`, `views`, `module_id`, `admin_api`, `routing`,
//! `local_site`), then the shared services (`services`, `pua`), then the modules
//! (`modules`, policy only, never calling each other), then the host (`engine`), the only
//! place that knows every module.

pub mod admin_api;
pub mod engine;
pub mod flood;
pub mod handles;
pub mod ids;
pub mod local_site;
pub mod module_id;
pub mod modules;
pub mod persist;
pub mod presence;
pub mod presence_state;
pub mod pua;
pub mod registrar;
pub mod routing;
pub mod services;
pub mod sip;
pub mod time;
pub mod timers;
pub mod users;
pub mod views;
pub mod watcher_rules;
pub mod xmpp;
