"""Interop harness: real Kamailio, the gateway binary, a scripted SIP UA and a capturing relay."""
