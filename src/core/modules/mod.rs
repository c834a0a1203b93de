//! Modules: policy on the shared PUA service. Each plugs into the engine through hooks
//! and never calls another module.

pub mod admin;
