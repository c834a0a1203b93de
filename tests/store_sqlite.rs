//! The SQLite store against a real temporary file; "reopen" simulates a gateway restart
//! (product.md, Persistence: durable before acknowledged, nothing lost on restart).

use rusqlite::Connection;
use serde_json::json;
use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable, StoredRow};
use xmpp_sip_gateway::core::time::Timestamp;
use xmpp_sip_gateway::io::store::{Store, StoreError, SCHEMA_VERSION};

fn put(table: StoreTable, key: &str, data: serde_json::Value) -> StoreOp {
    StoreOp::Put {
        table,
        key: key.to_string(),
        owner: "bridge".to_string(),
        subject: format!("sip:{key}@example.com"),
        expires_at: Some(Timestamp::from_secs(1_700_000_000)),
        data,
    }
}

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.sqlite");
    (dir, path)
}

#[test]
fn put_survives_reopen() {
    let (_dir, path) = temp_db();
    {
        let mut store = Store::open(&path).unwrap();
        store
            .apply(&put(
                StoreTable::Publications,
                "alice",
                json!({"etag": "e1"}),
            ))
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.load_all().unwrap(),
        vec![StoredRow {
            table: StoreTable::Publications,
            key: "alice".into(),
            owner: "bridge".into(),
            data: json!({"etag": "e1"}),
        }]
    );
}

#[test]
fn put_with_same_key_replaces_the_row() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply(&put(StoreTable::Subscriptions, "k", json!({"cseq": 1})))
        .unwrap();
    store
        .apply(&put(StoreTable::Subscriptions, "k", json!({"cseq": 2})))
        .unwrap();
    drop(store);
    let rows = Store::open(&path).unwrap().load_all().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].data, json!({"cseq": 2}));
}

#[test]
fn delete_removes_the_row_across_reopen() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply(&put(StoreTable::NotifierDialogs, "d1", json!(1)))
        .unwrap();
    store
        .apply(&put(StoreTable::NotifierDialogs, "d2", json!(2)))
        .unwrap();
    store
        .apply(&StoreOp::Delete {
            table: StoreTable::NotifierDialogs,
            key: "d1".into(),
        })
        .unwrap();
    drop(store);
    let rows = Store::open(&path).unwrap().load_all().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, vec!["d2"]);
}

#[test]
fn delete_of_a_missing_key_is_not_an_error() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply(&StoreOp::Delete {
            table: StoreTable::Presence,
            key: "nobody".into(),
        })
        .unwrap();
    assert!(store.load_all().unwrap().is_empty());
}

#[test]
fn every_table_round_trips_in_deterministic_order() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    // Written in reverse order on purpose: load_all orders by table (ALL order), then key.
    for table in StoreTable::ALL.iter().rev() {
        for key in ["b", "a"] {
            store
                .apply(&put(*table, key, json!({"t": table.name(), "k": key})))
                .unwrap();
        }
    }
    drop(store);
    let rows = Store::open(&path).unwrap().load_all().unwrap();
    let got: Vec<(StoreTable, String)> = rows.iter().map(|r| (r.table, r.key.clone())).collect();
    let want: Vec<(StoreTable, String)> = StoreTable::ALL
        .iter()
        .flat_map(|t| [(*t, "a".to_string()), (*t, "b".to_string())])
        .collect();
    assert_eq!(got, want);
    for row in rows {
        assert_eq!(row.data, json!({"t": row.table.name(), "k": row.key}));
    }
}

#[test]
fn apply_batch_writes_all_ops_in_order() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply_batch(&[
            put(StoreTable::Authorizations, "x", json!("first")),
            put(StoreTable::Authorizations, "x", json!("second")),
            put(StoreTable::Authorizations, "y", json!("y")),
            StoreOp::Delete {
                table: StoreTable::Authorizations,
                key: "y".into(),
            },
        ])
        .unwrap();
    drop(store);
    let rows = Store::open(&path).unwrap().load_all().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].data, json!("second"));
}

#[test]
fn apply_batch_failure_rolls_back_the_whole_batch() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    // A trigger makes the second write fail, standing in for a disk error mid-batch.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON presence WHEN NEW.key = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let err = store
        .apply_batch(&[
            put(StoreTable::Presence, "good", json!(1)),
            put(StoreTable::Presence, "bad", json!(2)),
        ])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Write { table: "presence", ref key, .. } if key == "bad"),
        "{err}"
    );
    assert!(store.load_all().unwrap().is_empty());
}

#[test]
fn corrupt_json_row_is_skipped_and_others_load() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply(&put(StoreTable::Publications, "ok", json!({"etag": "e"})))
        .unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO publications (key, owner, subject, expires_at, data, updated_at) \
             VALUES ('broken', 'bridge', 'sip:b@example.com', NULL, '{not json', 0)",
            [],
        )
        .unwrap();
    let rows = store.load_all().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, vec!["ok"]);
}

#[test]
fn binary_garbage_data_cell_is_skipped() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO presence (key, owner, subject, expires_at, data, updated_at) \
             VALUES ('n', 'bridge', 's', NULL, X'00FF', 0)",
            [],
        )
        .unwrap();
    assert!(store.load_all().unwrap().is_empty());
}

#[test]
fn operator_reads_rows_with_plain_sql() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply(&StoreOp::Put {
            table: StoreTable::Subscriptions,
            key: "sub-1".into(),
            owner: "admin".into(),
            subject: "sip:alice@example.com".into(),
            expires_at: Some(Timestamp::from_millis(1_234_567)),
            data: json!({"call_id": "abc"}),
        })
        .unwrap();
    // A second connection, as `sqlite3 gateway.sqlite` would open it, while the store is open.
    let operator = Connection::open(&path).unwrap();
    let (owner, subject, expires_at, data, updated_at): (String, String, Option<i64>, String, i64) =
        operator
            .query_row(
                "SELECT owner, subject, expires_at, data, updated_at FROM subscriptions \
                 WHERE key = 'sub-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
    assert_eq!(owner, "admin");
    assert_eq!(subject, "sip:alice@example.com");
    assert_eq!(expires_at, Some(1_234_567));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).unwrap(),
        json!({"call_id": "abc"})
    );
    assert!(updated_at > 0);
}

#[test]
fn put_without_expiry_stores_null() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .apply(&StoreOp::Put {
            table: StoreTable::Authorizations,
            key: "a".into(),
            owner: "bridge".into(),
            subject: "s".into(),
            expires_at: None,
            data: json!(true),
        })
        .unwrap();
    let expires_at: Option<i64> = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT expires_at FROM authorizations WHERE key = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(expires_at, None);
}

#[test]
fn open_sets_wal_full_sync_and_schema_version() {
    let (_dir, path) = temp_db();
    let _store = Store::open(&path).unwrap();
    let operator = Connection::open(&path).unwrap();
    let mode: String = operator
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let version: i64 = operator
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn newer_schema_version_is_refused() {
    let (_dir, path) = temp_db();
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {};", SCHEMA_VERSION + 1))
        .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
}

#[test]
fn open_in_a_missing_directory_is_a_typed_error() {
    let (dir, _) = temp_db();
    let err = Store::open(dir.path().join("no/such/dir/db.sqlite")).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

/// The daemon moves the store to a blocking thread.
#[test]
fn store_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    std::thread::spawn(move || {
        store
            .apply(&put(StoreTable::Presence, "p", json!(null)))
            .unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(Store::open(&path).unwrap().load_all().unwrap().len(), 1);
}
