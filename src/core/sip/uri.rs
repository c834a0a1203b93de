//! SIP URIs (RFC 3261 §19.1), owner: sip-stack.
