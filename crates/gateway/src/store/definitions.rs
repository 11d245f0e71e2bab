//! Upstreams defined through the admin API (their definitions as JSON, so
//! every node and every restart sees them), and forgetting an upstream's
//! stored sessions when it changes.

use sqlx::Row;

use super::{Sql, Store, StoreError, sql_error};
use crate::clock::now_ms;
use crate::sync::lock;

impl Store {
    /// Every stored upstream definition (JSON), by name.
    pub async fn definitions(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(&mem.definitions)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            Store::Sql(Sql { pool, .. }) => {
                let rows =
                    sqlx::query("SELECT name, definition FROM tether_upstreams ORDER BY name")
                        .fetch_all(pool)
                        .await
                        .map_err(sql_error("list upstreams"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(sql_error("read upstreams"))
            }
        }
    }

    /// Stores (or replaces) an upstream definition.
    pub async fn put_definition(&self, name: &str, definition: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                lock(&mem.definitions).insert(name.to_owned(), definition.to_owned());
                Ok(())
            }
            Store::Sql(Sql { pool, .. }) => {
                sqlx::query(
                    "INSERT INTO tether_upstreams (name, definition, updated_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET
                       definition = excluded.definition, updated_ms = excluded.updated_ms",
                )
                .bind(name)
                .bind(definition)
                .bind(now_ms())
                .execute(pool)
                .await
                .map_err(sql_error("store upstream"))?;
                Ok(())
            }
        }
    }

    /// Removes an upstream definition; true if it existed.
    pub async fn delete_definition(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(mem) => Ok(lock(&mem.definitions).remove(name).is_some()),
            Store::Sql(Sql { pool, .. }) => {
                let done = sqlx::query("DELETE FROM tether_upstreams WHERE name = $1")
                    .bind(name)
                    .execute(pool)
                    .await
                    .map_err(sql_error("delete upstream"))?;
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
        store.put_definition("b", r#"{"name":"b"}"#).await.unwrap();
        store.put_definition("a", r#"{"name":"a"}"#).await.unwrap();
        store
            .put_definition("b", r#"{"name":"b","url":"x"}"#)
            .await
            .unwrap();
        let all = store.definitions().await.unwrap();
        assert_eq!(
            all,
            [
                ("a".to_owned(), r#"{"name":"a"}"#.to_owned()),
                ("b".to_owned(), r#"{"name":"b","url":"x"}"#.to_owned())
            ]
        );
        assert!(store.delete_definition("a").await.unwrap());
        assert!(!store.delete_definition("a").await.unwrap());
        assert_eq!(store.definitions().await.unwrap().len(), 1);
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
