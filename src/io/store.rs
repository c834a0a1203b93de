//! SQLite persistence of the engine's [`StoreOp`]s (product.md, Persistence). Owner: io-admin.
//!
//! One SQL table per [`StoreTable`] (named by [`StoreTable::name`]), all with the same
//! columns, so an operator can inspect the gateway's state with plain `sqlite3`:
//!
//! | column       | meaning                                                        |
//! |--------------|----------------------------------------------------------------|
//! | `key`        | `TEXT PRIMARY KEY`, the core's key for the record               |
//! | `owner`      | `TEXT`, the module that owns the row                            |
//! | `subject`    | `TEXT`, the presentity or watcher URI the row is about          |
//! | `expires_at` | `INTEGER NULL`, Unix milliseconds, informational                |
//! | `data`       | `TEXT`, the full record as JSON                                 |
//! | `updated_at` | `INTEGER`, Unix milliseconds of the last write (wall clock)     |
//!
//! Durability choices: `journal_mode=WAL` so readers such as an operator's `sqlite3` do not
//! block the gateway's writes; `synchronous=NORMAL`; `busy_timeout` of 5 s so an operator
//! holding a read lock delays a write instead of failing it.
//!
//! Why `NORMAL` and not `FULL`: "survives restarts" (product.md, Persistence) means a
//! committed write survives the gateway process ending in any way, including `kill -9`,
//! a panic or an OOM kill. In WAL mode a commit appends to the `-wal` file with `write()`
//! before [`Store::apply`] returns; from then on the data is in the operating system's
//! page cache and the next open (by this process or any other) replays it, whatever
//! happens to the process. `NORMAL` only leaves out the `fsync` of the WAL at each commit
//! (it syncs at checkpoints), so what it can lose is the last commits before a power loss
//! or a kernel crash, not before a process crash; and the database is never corrupted by
//! either. With `FULL` and one transaction per op, every NOTIFY sent or received paid an
//! `fsync` on the engine task; the daemon now also writes the store ops of one drain in
//! one transaction ([`Store::apply_batch`]). Together with the other fixes of that change
//! this took the gateway from about 4 000 to 20 000 updates/s (BENCHMARKS.md); the share of
//! each fix was not measured separately.

//! The schema version lives in `PRAGMA user_version` ([`SCHEMA_VERSION`]). A database
//! written by a newer gateway is refused rather than silently misread.
//!
//! `Store` is `Send` but blocking: the daemon should call it from a dedicated thread or
//! `tokio::task::spawn_blocking`, in the order the engine emitted the ops.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};

use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::time::Timestamp;

/// The schema this code writes and reads, stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for a lock held by another connection (e.g. an operator's `sqlite3`).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the persistence driver. Each names the file or the table and key involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot set up the store schema: {0}")]
    Schema(#[source] rusqlite::Error),
    #[error("store schema version {found} is newer than this gateway supports ({supported})")]
    UnsupportedSchema { found: i64, supported: i64 },
    #[error("cannot write {table}/{key}: {source}")]
    Write {
        table: &'static str,
        key: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot serialise the record {table}/{key}: {source}")]
    Serialize {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store transaction failed: {0}")]
    Transaction(#[source] rusqlite::Error),
    #[error("cannot read table {table}: {source}")]
    Read {
        table: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

/// The SQLite store. Opening creates the file and the schema when missing.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, configures WAL, `synchronous=NORMAL`
    /// and the busy timeout, and creates or checks the schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Store { conn, path };
        store.configure()?;
        store.migrate()?;
        tracing::info!(path = %store.path.display(), "store opened");
        Ok(store)
    }

    /// An in-memory store (no durability) for tests of the daemon wiring.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Store { conn, path };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(StoreError::Schema)?;
        // `journal_mode` answers with the mode in effect; an in-memory database stays "memory".
        let _mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(StoreError::Schema)?;
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(StoreError::Schema)?;
        Ok(())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(StoreError::Schema)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let mut ddl = String::from("BEGIN;\n");
        for table in StoreTable::ALL {
            let name = table.name();
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {name} (\n\
                 \x20 key TEXT PRIMARY KEY NOT NULL,\n\
                 \x20 owner TEXT NOT NULL,\n\
                 \x20 subject TEXT NOT NULL,\n\
                 \x20 expires_at INTEGER NULL,\n\
                 \x20 data TEXT NOT NULL,\n\
                 \x20 updated_at INTEGER NOT NULL\n\
                 );\n\
                 CREATE INDEX IF NOT EXISTS {name}_subject ON {name}(subject);\n"
            ));
        }
        ddl.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"));
        self.conn.execute_batch(&ddl).map_err(StoreError::Schema)?;
        Ok(())
    }

    /// Performs one write; it survives a crash of the process when it returns `Ok` (see the
    /// module docs for power loss).
    pub fn apply(&mut self, op: &StoreOp) -> Result<(), StoreError> {
        write_op(&self.conn, op, now_millis())
    }

    /// Performs `ops` in order inside one transaction: all of them or none.
    pub fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let tx = self.conn.transaction().map_err(StoreError::Transaction)?;
        for op in ops {
            write_op(&tx, op, now)?;
        }
        tx.commit().map_err(StoreError::Transaction)
    }

    /// Every row of every table, tables in [`StoreTable::ALL`] order and rows by key, for
    /// `engine::Input::Restore`. A row whose `data` is not valid JSON is skipped with a
    /// warning naming it (an operator's hand edit must not stop the gateway).
    pub fn load_all(&self) -> Result<Vec<StoredRow>, StoreError> {
        let mut rows = Vec::new();
        for table in StoreTable::ALL {
            let name = table.name();
            let read_err = |source| StoreError::Read {
                table: name,
                source,
            };
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT key, owner, data FROM {name} ORDER BY key"))
                .map_err(read_err)?;
            let mut cursor = stmt.query([]).map_err(read_err)?;
            while let Some(row) = cursor.next().map_err(read_err)? {
                let key: String = row.get(0).map_err(read_err)?;
                let owner: String = row.get(1).map_err(read_err)?;
                // Read as raw text-or-blob so a wrongly typed cell is a skipped row, not an error.
                let data = match row.get_ref(2).map_err(read_err)? {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        serde_json::from_slice::<serde_json::Value>(t).map_err(|e| e.to_string())
                    }
                    other => Err(format!("data column has type {:?}", other.data_type())),
                };
                match data {
                    Ok(data) => rows.push(StoredRow {
                        table,
                        key,
                        owner,
                        data,
                    }),
                    Err(error) => {
                        tracing::warn!(table = name, key = %key, %error, "skipping corrupt store row");
                    }
                }
            }
        }
        Ok(rows)
    }
}

fn write_op(conn: &Connection, op: &StoreOp, now: i64) -> Result<(), StoreError> {
    match op {
        StoreOp::Put {
            table,
            key,
            owner,
            subject,
            expires_at,
            data,
        } => {
            let name = table.name();
            let json = serde_json::to_string(data).map_err(|source| StoreError::Serialize {
                table: name,
                key: key.clone(),
                source,
            })?;
            let expires = expires_at.map(timestamp_to_sql);
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO {name} (key, owner, subject, expires_at, data, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))
            .and_then(|mut stmt| stmt.execute(params![key, owner, subject, expires, json, now]))
            .map_err(|source| StoreError::Write {
                table: name,
                key: key.clone(),
                source,
            })?;
            tracing::trace!(table = name, key = %key, "store put");
        }
        StoreOp::Delete { table, key } => {
            let name = table.name();
            conn.prepare_cached(&format!("DELETE FROM {name} WHERE key = ?1"))
                .and_then(|mut stmt| stmt.execute(params![key]))
                .map_err(|source| StoreError::Write {
                    table: name,
                    key: key.clone(),
                    source,
                })?;
            tracing::trace!(table = name, key = %key, "store delete");
        }
    }
    Ok(())
}

/// SQLite integers are signed 64-bit; milliseconds beyond that saturate.
fn timestamp_to_sql(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// The wall clock for `updated_at` (a driver may read the clock; the core may not).
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
