//! Durable session records: what any node needs to serve a client session —
//! the client's identity and negotiated version, and for each upstream used,
//! the upstream's own session id — so a restarted node, or another node,
//! re-attaches the same upstream sessions instead of re-initializing them.
//!
//! Backends: in-memory (one process), embedded SQLite (the default, a file in
//! the data directory) and Postgres (several nodes), through one SQL dialect.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::AnyPool;
use sqlx::Row;

use crate::sync::lock;

mod definitions;

/// One upstream session bound to a client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBinding {
    /// Upstream name.
    pub upstream: String,
    /// `legacy` or `modern`.
    pub era: String,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The upstream's `Mcp-Session-Id`, if it issued one.
    pub session_id: Option<String>,
}

/// A client session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// Empty for `/mcp`, else the upstream of `/u/<upstream>/mcp`.
    pub scope: String,
    /// Who the session belongs to.
    pub principal: String,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The client's `clientInfo` (JSON).
    pub client_info: String,
    /// The client's capabilities (JSON).
    pub client_capabilities: String,
    /// The level from `logging/setLevel`, if any.
    pub log_level: Option<String>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Last use, ms since the Unix epoch.
    pub last_seen_ms: i64,
    /// The upstream sessions it holds.
    pub upstreams: Vec<UpstreamBinding>,
}

/// Why the store failed.
#[derive(Debug)]
pub enum StoreError {
    /// The database failed an operation.
    Sql {
        /// What Tether was doing.
        operation: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },
    /// The folder of a SQLite file could not be created.
    Folder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The URL names no backend Tether has.
    UnsupportedUrl(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sql { operation, source } => {
                write!(f, "session store: {operation}: {source}")
            }
            StoreError::Folder { path, source } => {
                write!(f, "session store: create {}: {source}", path.display())
            }
            StoreError::UnsupportedUrl(url) => write!(
                f,
                "session store: unsupported url {url:?} (memory, sqlite://, postgres://)"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sql { source, .. } => Some(source),
            StoreError::Folder { source, .. } => Some(source),
            StoreError::UnsupportedUrl(_) => None,
        }
    }
}

fn sql_error(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { operation, source }
}

const MIGRATIONS: &[&str] = &[
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
];

/// Records kept by a [`Store::Memory`].
#[derive(Default)]
pub struct Memory {
    sessions: Mutex<HashMap<String, SessionRecord>>,
    definitions: Mutex<std::collections::BTreeMap<String, String>>,
}

/// Where session records (and upstreams defined through the admin API) live.
pub enum Store {
    /// This process only.
    Memory(Memory),
    /// SQLite or Postgres.
    Sql(AnyPool),
}

impl Store {
    /// Opens the store named by `url`: `memory`, `sqlite://path` (created if
    /// missing, with its folder) or `postgres://…`; runs the migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url == "memory" {
            return Ok(Store::Memory(Memory::default()));
        }
        sqlx::any::install_default_drivers();
        let url = match url.strip_prefix("sqlite://") {
            Some(path) => {
                let file = path.split('?').next().unwrap_or(path);
                if let Some(dir) = std::path::Path::new(file)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                if path.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            None if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                url.to_owned()
            }
            None => {
                return Err(StoreError::UnsupportedUrl(url.to_owned()));
            }
        };
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(if url.starts_with("sqlite") { 1 } else { 8 })
            .connect(&url)
            .await
            .map_err(sql_error("connect"))?;
        for statement in MIGRATIONS {
            sqlx::query(*statement)
                .execute(&pool)
                .await
                .map_err(sql_error("migrate"))?;
        }
        Ok(Store::Sql(pool))
    }

    /// Whether sessions outlive this process.
    pub fn is_durable(&self) -> bool {
        matches!(self, Store::Sql(_))
    }

    /// Saves a new session.
    pub async fn insert(&self, r: &SessionRecord) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                lock(&mem.sessions).insert(r.id.clone(), r.clone());
                Ok(())
            }
            Store::Sql(pool) => {
                sqlx::query(
                    "INSERT INTO tether_sessions (id, scope, principal, protocol_version, client_info, client_capabilities, log_level, created_ms, last_seen_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&r.id)
                .bind(&r.scope)
                .bind(&r.principal)
                .bind(&r.protocol_version)
                .bind(&r.client_info)
                .bind(&r.client_capabilities)
                .bind(&r.log_level)
                .bind(r.created_ms)
                .bind(r.last_seen_ms)
                .execute(pool)
                .await
                .map_err(sql_error("insert session"))?;
                Ok(())
            }
        }
    }

    /// Records (or replaces) the upstream session a client session holds.
    pub async fn bind(&self, session: &str, b: &UpstreamBinding) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                if let Some(r) = lock(&mem.sessions).get_mut(session) {
                    r.upstreams.retain(|u| u.upstream != b.upstream);
                    r.upstreams.push(b.clone());
                }
                Ok(())
            }
            Store::Sql(pool) => {
                sqlx::query(
                    "INSERT INTO tether_upstream_sessions (session_id, upstream, era, protocol_version, upstream_session_id)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (session_id, upstream) DO UPDATE SET
                       era = excluded.era, protocol_version = excluded.protocol_version,
                       upstream_session_id = excluded.upstream_session_id",
                )
                .bind(session)
                .bind(&b.upstream)
                .bind(&b.era)
                .bind(&b.protocol_version)
                .bind(&b.session_id)
                .execute(pool)
                .await
                .map_err(sql_error("bind upstream session"))?;
                Ok(())
            }
        }
    }

    /// The stored session, if any.
    pub async fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(&mem.sessions).get(id).cloned()),
            Store::Sql(pool) => {
                let row = sqlx::query(
                    "SELECT id, scope, principal, protocol_version, client_info, client_capabilities, log_level, created_ms, last_seen_ms
                     FROM tether_sessions WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(sql_error("load session"))?;
                let Some(row) = row else { return Ok(None) };
                let mut record = record_from(&row).map_err(sql_error("read session"))?;
                let bindings = sqlx::query(
                    "SELECT upstream, era, protocol_version, upstream_session_id
                     FROM tether_upstream_sessions WHERE session_id = $1",
                )
                .bind(id)
                .fetch_all(pool)
                .await
                .map_err(sql_error("load upstream sessions"))?;
                for b in bindings {
                    record.upstreams.push(UpstreamBinding {
                        upstream: b.try_get(0).map_err(sql_error("read binding"))?,
                        era: b.try_get(1).map_err(sql_error("read binding"))?,
                        protocol_version: b.try_get(2).map_err(sql_error("read binding"))?,
                        session_id: b.try_get(3).map_err(sql_error("read binding"))?,
                    });
                }
                Ok(Some(record))
            }
        }
    }

    /// Updates last-seen times (batched by the caller); returns the ids that
    /// are no longer stored (ended on another node).
    pub async fn touch(&self, seen: &[(String, i64)]) -> Result<Vec<String>, StoreError> {
        let mut gone = Vec::new();
        match self {
            Store::Memory(mem) => {
                let mut map = lock(&mem.sessions);
                for (id, at) in seen {
                    match map.get_mut(id) {
                        Some(r) => r.last_seen_ms = r.last_seen_ms.max(*at),
                        None => gone.push(id.clone()),
                    }
                }
            }
            Store::Sql(pool) => {
                for (id, at) in seen {
                    let done =
                        sqlx::query("UPDATE tether_sessions SET last_seen_ms = $1 WHERE id = $2")
                            .bind(*at)
                            .bind(id)
                            .execute(pool)
                            .await
                            .map_err(sql_error("touch session"))?;
                    if done.rows_affected() == 0 {
                        gone.push(id.clone());
                    }
                }
            }
        }
        Ok(gone)
    }

    /// Stores the client's log level.
    pub async fn set_log_level(&self, id: &str, level: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                if let Some(r) = lock(&mem.sessions).get_mut(id) {
                    r.log_level = Some(level.to_owned());
                }
                Ok(())
            }
            Store::Sql(pool) => {
                sqlx::query("UPDATE tether_sessions SET log_level = $1 WHERE id = $2")
                    .bind(level)
                    .bind(id)
                    .execute(pool)
                    .await
                    .map_err(sql_error("set log level"))?;
                Ok(())
            }
        }
    }

    /// Removes a session and its bindings; true if it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(&mem.sessions).remove(id).is_some()),
            Store::Sql(pool) => {
                sqlx::query("DELETE FROM tether_upstream_sessions WHERE session_id = $1")
                    .bind(id)
                    .execute(pool)
                    .await
                    .map_err(sql_error("delete bindings"))?;
                let done = sqlx::query("DELETE FROM tether_sessions WHERE id = $1")
                    .bind(id)
                    .execute(pool)
                    .await
                    .map_err(sql_error("delete session"))?;
                Ok(done.rows_affected() > 0)
            }
        }
    }

    /// Ids of sessions last seen before `before_ms` (at most `limit`).
    pub async fn expired(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(&mem.sessions)
                .values()
                .filter(|r| r.last_seen_ms < before_ms)
                .take(limit.max(0) as usize)
                .map(|r| r.id.clone())
                .collect()),
            Store::Sql(pool) => {
                let rows =
                    sqlx::query("SELECT id FROM tether_sessions WHERE last_seen_ms < $1 LIMIT $2")
                        .bind(before_ms)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                        .map_err(sql_error("find expired sessions"))?;
                rows.iter()
                    .map(|r| r.try_get(0).map_err(sql_error("read id")))
                    .collect()
            }
        }
    }
}

fn record_from(row: &sqlx::any::AnyRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: row.try_get(0)?,
        scope: row.try_get(1)?,
        principal: row.try_get(2)?,
        protocol_version: row.try_get(3)?,
        client_info: row.try_get(4)?,
        client_capabilities: row.try_get(5)?,
        log_level: row.try_get(6)?,
        created_ms: row.try_get(7)?,
        last_seen_ms: row.try_get(8)?,
        upstreams: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seen: i64) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            scope: String::new(),
            principal: "anonymous".into(),
            protocol_version: "2025-11-25".into(),
            client_info: r#"{"name":"c","version":"1"}"#.into(),
            client_capabilities: "{}".into(),
            log_level: None,
            created_ms: seen,
            last_seen_ms: seen,
            upstreams: Vec::new(),
        }
    }

    async fn round_trip(store: Store) {
        store.insert(&record("a", 10)).await.unwrap();
        store.insert(&record("b", 20)).await.unwrap();
        let binding = UpstreamBinding {
            upstream: "demo".into(),
            era: "legacy".into(),
            protocol_version: "2025-11-25".into(),
            session_id: Some("up-1".into()),
        };
        store.bind("a", &binding).await.unwrap();
        let replaced = UpstreamBinding {
            session_id: Some("up-2".into()),
            ..binding.clone()
        };
        store.bind("a", &replaced).await.unwrap();
        assert!(store.touch(&[("a".into(), 30)]).await.unwrap().is_empty());
        assert_eq!(
            store.touch(&[("zz".into(), 30)]).await.unwrap(),
            vec!["zz".to_string()]
        );
        store.set_log_level("a", "debug").await.unwrap();
        let a = store.load("a").await.unwrap().unwrap();
        assert_eq!(a.upstreams, vec![replaced]);
        assert_eq!(a.last_seen_ms, 30);
        assert_eq!(a.log_level.as_deref(), Some("debug"));
        assert_eq!(store.expired(25, 10).await.unwrap(), vec!["b".to_string()]);
        assert!(store.delete("b").await.unwrap());
        assert!(!store.delete("b").await.unwrap());
        assert_eq!(store.load("b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn memory_store() {
        round_trip(Store::open("memory").await.unwrap()).await;
    }

    #[tokio::test]
    async fn sqlite_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("tether-store-{}", std::process::id()));
        let url = format!("sqlite://{}/nested/sessions.db", dir.display());
        round_trip(Store::open(&url).await.unwrap()).await;
        let again = Store::open(&url).await.unwrap();
        assert!(
            again.load("a").await.unwrap().is_some(),
            "records persist in the file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
