//! Upstreams and virtual servers defined through the admin API (their
//! definitions as JSON, so every node and every restart sees them), and
//! forgetting an upstream's stored sessions when it changes.

use sqlx::Row;

use super::{Sql, Store, StoreError, sql_error};
use crate::clock::now_ms;
use crate::sync::lock;

/// What a stored definition defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionKind {
    /// An upstream (`[[upstreams]]`).
    Upstream,
    /// A virtual server (`[[virtual_servers]]`).
    VirtualServer,
}

/// The statements on one table of definitions: list, store, delete.
struct Statements {
    list: &'static str,
    put: &'static str,
    delete: &'static str,
}

/// The same statements on the table `$table`.
macro_rules! statements {
    ($table:literal) => {
        Statements {
            list: concat!("SELECT name, definition FROM ", $table, " ORDER BY name"),
            put: concat!(
                "INSERT INTO ",
                $table,
                " (name, definition, updated_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET
                   definition = excluded.definition, updated_ms = excluded.updated_ms"
            ),
            delete: concat!("DELETE FROM ", $table, " WHERE name = $1"),
        }
    };
}

impl DefinitionKind {
    /// The statements on the table the definitions are kept in.
    fn statements(self) -> Statements {
        match self {
            DefinitionKind::Upstream => statements!("tether_upstreams"),
            DefinitionKind::VirtualServer => statements!("tether_virtual_servers"),
        }
    }
}

impl Store {
    /// Every stored definition of `kind` (JSON), by name.
    pub async fn definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(mem.definitions(kind))
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            Store::Sql(Sql { pool, .. }) => {
                let rows = sqlx::query(kind.statements().list)
                    .fetch_all(pool)
                    .await
                    .map_err(sql_error("list definitions"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(sql_error("read definitions"))
            }
        }
    }

    /// Stores (or replaces) a definition of `kind`.
    pub async fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        definition: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                lock(mem.definitions(kind)).insert(name.to_owned(), definition.to_owned());
                Ok(())
            }
            Store::Sql(Sql { pool, .. }) => {
                sqlx::query(kind.statements().put)
                    .bind(name)
                    .bind(definition)
                    .bind(now_ms())
                    .execute(pool)
                    .await
                    .map_err(sql_error("store definition"))?;
                Ok(())
            }
        }
    }

    /// Removes a definition of `kind`; true if it existed.
    pub async fn delete_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(mem.definitions(kind)).remove(name).is_some()),
            Store::Sql(Sql { pool, .. }) => {
                let done = sqlx::query(kind.statements().delete)
                    .bind(name)
                    .execute(pool)
                    .await
                    .map_err(sql_error("delete definition"))?;
                Ok(done.rows_affected() > 0)
            }
        }
    }

    /// Forgets every stored upstream session with `upstream` (it was changed
    /// or removed): restored client sessions open fresh ones.
    pub async fn forget_upstream(&self, upstream: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                for r in lock(&mem.sessions).values_mut() {
                    r.upstreams.retain(|b| b.upstream != upstream);
                }
                Ok(())
            }
            Store::Sql(Sql { pool, .. }) => {
                sqlx::query("DELETE FROM tether_upstream_sessions WHERE upstream = $1")
                    .bind(upstream)
                    .execute(pool)
                    .await
                    .map_err(sql_error("forget upstream sessions"))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(store: Store) {
        let kind = DefinitionKind::Upstream;
        store
            .put_definition(kind, "b", r#"{"name":"b"}"#)
            .await
            .unwrap();
        store
            .put_definition(kind, "a", r#"{"name":"a"}"#)
            .await
            .unwrap();
        store
            .put_definition(kind, "b", r#"{"name":"b","url":"x"}"#)
            .await
            .unwrap();
        let virtual_server = DefinitionKind::VirtualServer;
        store
            .put_definition(virtual_server, "a", r#"{"name":"a","tools":[]}"#)
            .await
            .unwrap();
        let all = store.definitions(kind).await.unwrap();
        assert_eq!(
            all,
            [
                ("a".to_owned(), r#"{"name":"a"}"#.to_owned()),
                ("b".to_owned(), r#"{"name":"b","url":"x"}"#.to_owned())
            ]
        );
        assert!(store.delete_definition(kind, "a").await.unwrap());
        assert!(!store.delete_definition(kind, "a").await.unwrap());
        assert_eq!(store.definitions(kind).await.unwrap().len(), 1);
        let servers = store.definitions(virtual_server).await.unwrap();
        assert_eq!(servers.len(), 1, "each kind in its own table");
    }

    #[tokio::test]
    async fn definitions_round_trip_in_memory_and_sqlite() {
        round_trip(Store::open("memory").await.unwrap()).await;
        let dir = std::env::temp_dir().join(format!("tether-defs-{}", std::process::id()));
        let url = format!("sqlite://{}/s.db", dir.display());
        round_trip(Store::open(&url).await.unwrap()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
