//! gateway.toml → validated settings. Owner: io-daemon.
