//! HTTP management API (axum). Owner: io-admin.
