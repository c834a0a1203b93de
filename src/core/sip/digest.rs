//! Digest authentication for outbound requests (RFC 3261 §22, RFC 7616 for SHA-256),
//! owner: sip-stack.
