//! Wires the drivers to the engine; graceful shutdown. Owner: io-daemon.
