//! SQLite persistence of the engine StoreOps. Owner: io-admin.
