//! Drivers: sockets, framing, persistence and HTTP. They stamp inputs with the time of
//! receipt, hand them to the engine, and perform the engine's outputs.
