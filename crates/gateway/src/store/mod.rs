//! Durable session records: what any node needs to serve a client session —
//! the client's identity and negotiated version, and for each upstream used,
//! the upstream's own session id — so a restarted node, or another node,
//! re-attaches the same upstream sessions instead of re-initializing them.
//! Tasks (`tasks`) are kept here for the same reason.
//!
//! Backends: in-memory (one process), embedded SQLite (the default, a file in
//! the data directory) and Postgres (several nodes), through one SQL dialect.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::Row;

use crate::sync::lock;

mod cluster;
mod definitions;
mod migrations;
mod tasks;

pub use cluster::{CHANNEL, CapReached, NodeRow, SessionCaps};
pub use definitions::DefinitionKind;
pub use tasks::TaskRecord;

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
    /// The cluster node that serves it (none: no node yet, or one node only).
    pub home_node: Option<String>,
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
    /// A cluster operation on a store nodes cannot share (not Postgres).
    NotShared,
    /// The database did not answer an operation in time.
    TimedOut(&'static str),
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
            StoreError::NotShared => {
                f.write_str("session store: only a postgres:// store is shared by a cluster")
            }
            StoreError::TimedOut(operation) => {
                write!(f, "session store: {operation}: no answer in time")
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
            StoreError::UnsupportedUrl(_) | StoreError::NotShared | StoreError::TimedOut(_) => None,
        }
    }
}

fn sql_error(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { operation, source }
}

/// Records kept by a [`Store::Memory`].
#[derive(Default)]
pub struct Memory {
    sessions: Mutex<HashMap<String, SessionRecord>>,
    definitions: Mutex<std::collections::BTreeMap<String, String>>,
    virtual_servers: Mutex<std::collections::BTreeMap<String, String>>,
    tasks: Mutex<HashMap<String, TaskRecord>>,
}

impl Memory {
    /// The definitions of `kind`.
    fn definitions(
        &self,
        kind: DefinitionKind,
    ) -> &Mutex<std::collections::BTreeMap<String, String>> {
        match kind {
            DefinitionKind::Upstream => &self.definitions,
            DefinitionKind::VirtualServer => &self.virtual_servers,
        }
    }
}

/// A SQL database behind the store.
pub struct Sql {
    pool: AnyPool,
    /// The URL, when the database is Postgres (several nodes may share it).
    postgres: Option<String>,
}

/// Where session records (and upstreams defined through the admin API) live.
pub enum Store {
    /// This process only.
    Memory(Memory),
    /// SQLite or Postgres.
    Sql(Sql),
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
        let sqlite = url.starts_with("sqlite");
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            // A database server that went away fails requests in seconds
            // (503 + Retry-After), not after sqlx's default 30 s; a local
            // SQLite file only queues behind its one connection.
            .acquire_timeout(Duration::from_secs(if sqlite { 30 } else { 5 }))
            .connect(&url)
            .await
            .map_err(sql_error("connect"))?;
        let postgres = (!sqlite).then(|| url.clone());
        migrations::migrate(&pool, postgres.is_some()).await?;
        Ok(Store::Sql(Sql { pool, postgres }))
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
            Store::Sql(Sql { pool, .. }) => {
                insert_session(r)
                    .execute(pool)
                    .await
                    .map_err(sql_error("insert session"))?;
                Ok(())
            }
        }
    }

    /// Records the upstream session a client session holds with `b.upstream`
    /// unless one is recorded already: the first binding stored wins, on
    /// every node. `None` when `b` is the one stored; else the winner's,
    /// which the caller adopts (closing its own).
    pub async fn bind_first(
        &self,
        session: &str,
        b: &UpstreamBinding,
    ) -> Result<Option<UpstreamBinding>, StoreError> {
        let winner = match self {
            Store::Memory(mem) => {
                let mut sessions = lock(&mem.sessions);
                let Some(r) = sessions.get_mut(session) else {
                    return Ok(None);
                };
                match r.upstreams.iter().find(|u| u.upstream == b.upstream) {
                    Some(stored) => stored.clone(),
                    None => {
                        r.upstreams.push(b.clone());
                        return Ok(None);
                    }
                }
            }
            Store::Sql(Sql { pool, .. }) => {
                let done = sqlx::query(
                    "INSERT INTO tether_upstream_sessions (session_id, upstream, era, protocol_version, upstream_session_id)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (session_id, upstream) DO NOTHING",
                )
                .bind(session)
                .bind(&b.upstream)
                .bind(&b.era)
                .bind(&b.protocol_version)
                .bind(&b.session_id)
                .execute(pool)
                .await
                .map_err(sql_error("bind upstream session"))?;
                if done.rows_affected() > 0 {
                    return Ok(None);
                }
                let row = sqlx::query(
                    "SELECT upstream, era, protocol_version, upstream_session_id
                     FROM tether_upstream_sessions WHERE session_id = $1 AND upstream = $2",
                )
                .bind(session)
                .bind(&b.upstream)
                .fetch_optional(pool)
                .await
                .map_err(sql_error("read upstream session"))?;
                match row {
                    Some(row) => binding_from(&row).map_err(sql_error("read binding"))?,
                    // Forgotten in between (replaced): the next use stores its own.
                    None => return Ok(None),
                }
            }
        };
        Ok((winner != *b).then_some(winner))
    }

    /// Forgets the binding to `b.upstream` if it is still `b` (its upstream
    /// session was lost and is being replaced; a newer one stays).
    pub async fn unbind(&self, session: &str, b: &UpstreamBinding) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                if let Some(r) = lock(&mem.sessions).get_mut(session) {
                    r.upstreams.retain(|u| u != b);
                }
                Ok(())
            }
            Store::Sql(Sql { pool, .. }) => {
                sqlx::query(
                    "DELETE FROM tether_upstream_sessions
                     WHERE session_id = $1 AND upstream = $2 AND COALESCE(upstream_session_id, '') = $3",
                )
                .bind(session)
                .bind(&b.upstream)
                .bind(b.session_id.as_deref().unwrap_or(""))
                .execute(pool)
                .await
                .map_err(sql_error("unbind upstream session"))?;
                Ok(())
            }
        }
    }

    /// The stored session, if any.
    pub async fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(&mem.sessions).get(id).cloned()),
            Store::Sql(Sql { pool, .. }) => {
                let row = sqlx::query(
                    "SELECT id, scope, principal, protocol_version, client_info, client_capabilities, log_level, created_ms, last_seen_ms, home_node
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
                    record
                        .upstreams
                        .push(binding_from(&b).map_err(sql_error("read binding"))?);
                }
                Ok(Some(record))
            }
        }
    }

    /// Updates last-seen times (batched by the caller); returns the ids that
    /// are no longer stored (ended on another node) or, with `home`, no
    /// longer homed there (another node took them over).
    pub async fn touch(
        &self,
        seen: &[(String, i64)],
        home: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut gone = Vec::new();
        match self {
            Store::Memory(mem) => {
                let mut map = lock(&mem.sessions);
                for (id, at) in seen {
                    match map
                        .get_mut(id)
                        .filter(|r| home.is_none() || r.home_node.as_deref() == home)
                    {
                        Some(r) => r.last_seen_ms = r.last_seen_ms.max(*at),
                        None => gone.push(id.clone()),
                    }
                }
            }
            Store::Sql(Sql { pool, .. }) => {
                for (id, at) in seen {
                    let done = sqlx::query(
                        "UPDATE tether_sessions SET last_seen_ms = $1
                         WHERE id = $2 AND ($3 = '' OR home_node = $3)",
                    )
                    .bind(*at)
                    .bind(id)
                    .bind(home.unwrap_or(""))
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
            Store::Sql(Sql { pool, .. }) => {
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
            Store::Memory(mem) => {
                let mut sessions = lock(&mem.sessions);
                let existed = sessions.remove(id).is_some();
                crate::sync::shrink_when_sparse(&mut sessions);
                Ok(existed)
            }
            Store::Sql(Sql { pool, .. }) => {
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
            Store::Sql(Sql { pool, .. }) => {
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

/// The statement storing a new session.
fn insert_session(r: &SessionRecord) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO tether_sessions (id, scope, principal, protocol_version, client_info, client_capabilities, log_level, created_ms, last_seen_ms, home_node)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .bind(&r.home_node)
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
        home_node: row.try_get(9)?,
    })
}

fn binding_from(row: &sqlx::any::AnyRow) -> Result<UpstreamBinding, sqlx::Error> {
    Ok(UpstreamBinding {
        upstream: row.try_get(0)?,
        era: row.try_get(1)?,
        protocol_version: row.try_get(2)?,
        session_id: row.try_get(3)?,
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
            home_node: None,
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
        assert_eq!(store.bind_first("a", &binding).await.unwrap(), None);
        assert_eq!(store.bind_first("a", &binding).await.unwrap(), None);
        let replaced = UpstreamBinding {
            session_id: Some("up-2".into()),
            ..binding.clone()
        };
        assert_eq!(
            store.bind_first("a", &replaced).await.unwrap(),
            Some(binding.clone()),
            "the first binding stored wins"
        );
        store.unbind("a", &replaced).await.unwrap();
        assert_eq!(
            store.load("a").await.unwrap().unwrap().upstreams,
            vec![binding.clone()],
            "only the binding named is forgotten"
        );
        store.unbind("a", &binding).await.unwrap();
        assert_eq!(store.bind_first("a", &replaced).await.unwrap(), None);
        assert!(
            store
                .touch(&[("a".into(), 30)], None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.touch(&[("zz".into(), 30)], None).await.unwrap(),
            vec!["zz".to_string()]
        );
        assert_eq!(
            store.touch(&[("a".into(), 30)], Some("n2")).await.unwrap(),
            vec!["a".to_string()],
            "homed elsewhere"
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
