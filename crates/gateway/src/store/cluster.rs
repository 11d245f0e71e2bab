//! What the nodes of a cluster share through the store (Postgres only; see
//! docs/architecture.md, "Cluster"): the nodes and their heartbeats, the
//! home node of each session (moved only by compare-and-set), cluster-wide
//! session caps, singletons' owners, and notifications every node hears at
//! once (`LISTEN`/`NOTIFY`).
//!
//! Times are the database's clock, so nodes whose clocks disagree still
//! agree on who missed heartbeats.

use sqlx::Row;

use super::{SessionRecord, Sql, Store, StoreError, insert_session, sql_error};

/// The database's clock in ms since the Unix epoch (SQL, for `concat!`).
macro_rules! db_now {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}
/// An advisory lock key only session creation under cluster-wide caps takes.
const CAPS_LOCK: i64 = 0x7465_7468_6572_0002;
/// The `NOTIFY` channel of Tether's cluster events.
pub const CHANNEL: &str = "tether_cluster";

/// A node as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Its id.
    pub id: String,
    /// Where other nodes reach it (`http://host:port`).
    pub address: String,
    /// Time since its last heartbeat, by the database's clock.
    pub silent_ms: i64,
    /// It is leaving (graceful shutdown).
    pub draining: bool,
}

/// Cluster-wide session caps.
#[derive(Debug, Clone, Copy)]
pub struct SessionCaps {
    /// Most sessions in the cluster.
    pub total: usize,
    /// Most sessions of one principal in the cluster.
    pub per_principal: usize,
}

/// Which cluster-wide cap a new session would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapReached {
    /// The cluster holds `total` sessions.
    Total,
    /// The principal holds `per_principal` sessions.
    Principal,
}

impl Store {
    fn postgres(&self) -> Option<(&sqlx::AnyPool, &str)> {
        match self {
            Store::Sql(Sql {
                pool,
                postgres: Some(url),
            }) => Some((pool, url)),
            _ => None,
        }
    }

    /// The Postgres URL, when several nodes can share this store.
    pub fn shared_url(&self) -> Option<&str> {
        self.postgres().map(|(_, url)| url)
    }

    fn shared(&self) -> Result<&sqlx::AnyPool, StoreError> {
        self.postgres()
            .map(|(pool, _)| pool)
            .ok_or(StoreError::NotShared)
    }

    /// Saves a new session unless a cluster-wide cap is reached; creations
    /// are serialized cluster-wide (an advisory lock), so the caps are exact.
    pub async fn insert_capped(
        &self,
        r: &SessionRecord,
        caps: SessionCaps,
    ) -> Result<Result<(), CapReached>, StoreError> {
        let pool = self.shared()?;
        let mut tx = pool.begin().await.map_err(sql_error("begin"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CAPS_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("lock session caps"))?;
        let row = sqlx::query(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE principal = $1) FROM tether_sessions",
        )
        .bind(&r.principal)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error("count sessions"))?;
        let total: i64 = row.try_get(0).map_err(sql_error("count sessions"))?;
        let mine: i64 = row.try_get(1).map_err(sql_error("count sessions"))?;
        let cap = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if total >= cap(caps.total) {
            return Ok(Err(CapReached::Total));
        }
        if mine >= cap(caps.per_principal) {
            return Ok(Err(CapReached::Principal));
        }
        insert_session(r)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("insert session"))?;
        tx.commit().await.map_err(sql_error("commit session"))?;
        Ok(Ok(()))
    }

    /// Makes `node` the session's home if its home is still `from` (none:
    /// `None`); true when this call moved it, and then `announce` is sent on
    /// [`CHANNEL`] with the move (in the same transaction: both or neither).
    pub async fn move_home(
        &self,
        id: &str,
        from: Option<&str>,
        node: &str,
        announce: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.shared()?.begin().await.map_err(sql_error("begin"))?;
        let done = sqlx::query(
            "UPDATE tether_sessions SET home_node = $1
             WHERE id = $2 AND COALESCE(home_node, '') = $3",
        )
        .bind(node)
        .bind(id)
        .bind(from.unwrap_or(""))
        .execute(&mut *tx)
        .await
        .map_err(sql_error("move session home"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(announce)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("notify"))?;
        tx.commit()
            .await
            .map_err(sql_error("commit session home"))?;
        Ok(true)
    }

    /// Leaves the sessions whose home is `node` without a home (the node is
    /// leaving; the next node a request reaches adopts them).
    pub async fn release_homes(&self, node: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE tether_sessions SET home_node = NULL WHERE home_node = $1")
            .bind(node)
            .execute(self.shared()?)
            .await
            .map_err(sql_error("release session homes"))?;
        Ok(done.rows_affected())
    }

    /// Ids of the sessions homed on `node` whose scope starts with `prefix`.
    pub async fn sessions_homed(
        &self,
        node: &str,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM tether_sessions WHERE home_node = $1 AND starts_with(scope, $2)",
        )
        .bind(node)
        .bind(prefix)
        .fetch_all(self.shared()?)
        .await
        .map_err(sql_error("list sessions of a node"))?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(sql_error("read id")))
            .collect()
    }

    /// Registers (or re-registers) a node, heard from now; returns the other
    /// nodes registered at the same address, removed (earlier lives of this
    /// node: two cannot listen at one address).
    pub async fn register_node(&self, id: &str, address: &str) -> Result<Vec<String>, StoreError> {
        let replaced =
            sqlx::query("DELETE FROM tether_nodes WHERE address = $1 AND id <> $2 RETURNING id")
                .bind(address)
                .bind(id)
                .fetch_all(self.shared()?)
                .await
                .map_err(sql_error("replace node"))?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<Vec<String>, _>>()
                .map_err(sql_error("read node"))?;
        sqlx::query(concat!(
            "INSERT INTO tether_nodes (id, address, started_ms, heartbeat_ms, draining)
             VALUES ($1, $2, ", db_now!(), ", ", db_now!(), ", 0)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address,
               started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms, draining = 0"
        ))
        .bind(id)
        .bind(address)
        .execute(self.shared()?)
        .await
        .map_err(sql_error("register node"))?;
        Ok(replaced)
    }

    /// Records a heartbeat of `id`; false when its row is gone (another node
    /// found it silent too long and removed it).
    pub async fn heartbeat(&self, id: &str, draining: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE tether_nodes SET heartbeat_ms = ",
            db_now!(),
            ", draining = $1 WHERE id = $2"
        ))
        .bind(i32::from(draining))
        .bind(id)
        .execute(self.shared()?)
        .await
        .map_err(sql_error("heartbeat"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Every registered node.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT id, address, ",
            db_now!(),
            " - heartbeat_ms, draining FROM tether_nodes ORDER BY id"
        ))
        .fetch_all(self.shared()?)
        .await
        .map_err(sql_error("list nodes"))?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    silent_ms: r.try_get(2)?,
                    draining: r.try_get::<i32, _>(3)? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql_error("read nodes"))
    }

    /// Removes `id` if it has been silent longer than `silent_ms` (`None`:
    /// whatever its heartbeat); true when this call removed it, so exactly
    /// one node cleans up after a dead one.
    pub async fn remove_node(&self, id: &str, silent_ms: Option<i64>) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "DELETE FROM tether_nodes WHERE id = $1 AND ",
            db_now!(),
            " - heartbeat_ms > $2"
        ))
        .bind(id)
        .bind(silent_ms.unwrap_or(i64::MIN / 2))
        .execute(self.shared()?)
        .await
        .map_err(sql_error("remove node"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The node that runs `resource`, if any.
    pub async fn owner(&self, resource: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT node FROM tether_owners WHERE resource = $1")
            .bind(resource)
            .fetch_optional(self.shared()?)
            .await
            .map_err(sql_error("read owner"))?;
        row.map(|r| r.try_get(0))
            .transpose()
            .map_err(sql_error("read owner"))
    }

    /// Makes `node` the owner of `resource` if its owner is still `from`
    /// (none: `None`); true when this call did.
    pub async fn claim(
        &self,
        resource: &str,
        from: Option<&str>,
        node: &str,
    ) -> Result<bool, StoreError> {
        let pool = self.shared()?;
        let done = match from {
            None => sqlx::query(
                "INSERT INTO tether_owners (resource, node) VALUES ($1, $2)
                 ON CONFLICT (resource) DO NOTHING",
            )
            .bind(resource)
            .bind(node),
            Some(old) => {
                sqlx::query("UPDATE tether_owners SET node = $2 WHERE resource = $1 AND node = $3")
                    .bind(resource)
                    .bind(node)
                    .bind(old)
            }
        }
        .execute(pool)
        .await
        .map_err(sql_error("claim owner"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up everything `node` owns.
    pub async fn release_owned(&self, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tether_owners WHERE node = $1")
            .bind(node)
            .execute(self.shared()?)
            .await
            .map_err(sql_error("release owned"))?;
        Ok(())
    }

    /// Tells every node listening on [`CHANNEL`].
    pub async fn notify(&self, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(self.shared()?)
            .await
            .map_err(sql_error("notify"))?;
        Ok(())
    }
}
