//! The store's schema, as numbered steps applied once each. On Postgres the
//! steps run in one transaction under an advisory lock, so any number of
//! nodes may start at once on an empty (or older) database: one applies
//! them, the others wait and find them applied.

use sqlx::{AnyPool, Row};

use super::{StoreError, sql_error};

/// Schema steps, in order; the number of a step is its index plus one.
/// Never edit a step that has shipped: add one.
const STEPS: &[&[&str]] = &[
    // 1: sessions, their upstream sessions, admin-defined upstreams.
    &[
        "CREATE TABLE IF NOT EXISTS tether_sessions (
            id TEXT PRIMARY KEY,
            scope TEXT NOT NULL,
            principal TEXT NOT NULL,
            protocol_version TEXT NOT NULL,
            client_info TEXT NOT NULL,
            client_capabilities TEXT NOT NULL,
            log_level TEXT,
            created_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS tether_sessions_last_seen ON tether_sessions (last_seen_ms)",
        "CREATE TABLE IF NOT EXISTS tether_upstreams (
            name TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            updated_ms BIGINT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS tether_upstream_sessions (
            session_id TEXT NOT NULL,
            upstream TEXT NOT NULL,
            era TEXT NOT NULL,
            protocol_version TEXT NOT NULL,
            upstream_session_id TEXT,
            PRIMARY KEY (session_id, upstream)
        )",
    ],
    // 2: the cluster — each session's home node, the nodes, and who runs
    // what only one node may run (a shared stdio process).
    &[
        "ALTER TABLE tether_sessions ADD COLUMN home_node TEXT",
        "CREATE INDEX IF NOT EXISTS tether_sessions_principal ON tether_sessions (principal)",
        "CREATE INDEX IF NOT EXISTS tether_sessions_home ON tether_sessions (home_node)",
        "CREATE TABLE IF NOT EXISTS tether_nodes (
            id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            started_ms BIGINT NOT NULL,
            heartbeat_ms BIGINT NOT NULL,
            draining INTEGER NOT NULL DEFAULT 0
        )",
        "CREATE TABLE IF NOT EXISTS tether_owners (
            resource TEXT PRIMARY KEY,
            node TEXT NOT NULL
        )",
    ],
    // 3: tasks (the 2026-07-28 tasks extension), relayed or run by Tether.
    &[
        "CREATE TABLE IF NOT EXISTS tether_tasks (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            scope TEXT NOT NULL,
            upstream TEXT NOT NULL,
            upstream_task TEXT,
            runner TEXT,
            state TEXT NOT NULL,
            terminal INTEGER NOT NULL,
            lease_ms BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS tether_tasks_expires ON tether_tasks (expires_ms)",
        "CREATE INDEX IF NOT EXISTS tether_tasks_runner ON tether_tasks (runner)",
    ],
    // 4: admin-defined virtual servers.
    &["CREATE TABLE IF NOT EXISTS tether_virtual_servers (
            name TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            updated_ms BIGINT NOT NULL
        )"],
];

/// A Postgres advisory lock key only Tether's migrations take.
const MIGRATION_LOCK: i64 = 0x7465_7468_6572_0001;

/// Brings the schema up to date.
pub async fn migrate(pool: &AnyPool, postgres: bool) -> Result<(), StoreError> {
    // SQLite: take the write lock at once, so two processes opening one file
    // together apply the steps one after the other.
    let begin = if postgres { "BEGIN" } else { "BEGIN IMMEDIATE" };
    let mut tx = pool.begin_with(begin).await.map_err(sql_error("migrate"))?;
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("lock for migration"))?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS tether_schema (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(sql_error("migrate"))?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM tether_schema")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(sql_error("read schema version"))?;
    for (n, step) in STEPS.iter().enumerate().skip(applied.max(0) as usize) {
        for statement in *step {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(sql_error("migrate"))?;
        }
        sqlx::query("INSERT INTO tether_schema (version) VALUES ($1)")
            .bind(n as i64 + 1)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("record schema version"))?;
    }
    tx.commit().await.map_err(sql_error("migrate"))
}
