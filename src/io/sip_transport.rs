//! SIP transports: UDP and TCP sockets. Owner: io-daemon.
