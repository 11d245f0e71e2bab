//! Task records (the 2026-07-28 tasks extension): which principal and
//! endpoint a task belongs to, and either the upstream task it stands for
//! (a task the upstream runs, relayed under Tether's id) or its state as
//! Tether runs it (the `DetailedTask`, written by the node running it and
//! read by any node). A running task's runner renews a lease; a task whose
//! lease ran out was left behind by a node that stopped.

use sqlx::Row;

use super::{Sql, Store, StoreError, sql_error};
use crate::sync::lock;

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Tether's task id (what the client holds).
    pub id: String,
    /// Who the task belongs to.
    pub principal: String,
    /// Empty for `/mcp`, else the upstream of `/u/<upstream>/mcp`.
    pub scope: String,
    /// The upstream the call went to.
    pub upstream: String,
    /// A relayed task: the upstream's own task id.
    pub upstream_task: Option<String>,
    /// A task Tether runs: the run that runs it (a node's process).
    pub runner: Option<String>,
    /// A task Tether runs: its `DetailedTask` (JSON).
    pub state: String,
    /// Whether the state is final (completed, failed, cancelled).
    pub terminal: bool,
    /// Until when the runner is known to be alive, ms since the Unix epoch.
    pub lease_ms: i64,
    /// When the record may be dropped, ms since the Unix epoch.
    pub expires_ms: i64,
}

fn task_from(row: &sqlx::any::AnyRow) -> Result<TaskRecord, sqlx::Error> {
    Ok(TaskRecord {
        id: row.try_get(0)?,
        principal: row.try_get(1)?,
        scope: row.try_get(2)?,
        upstream: row.try_get(3)?,
        upstream_task: row.try_get(4)?,
        runner: row.try_get(5)?,
        state: row.try_get(6)?,
        terminal: row.try_get::<i64, _>(7)? != 0,
        lease_ms: row.try_get(8)?,
        expires_ms: row.try_get(9)?,
    })
}

impl Store {
    /// Stores a new task (before its id reaches the client: a `tasks/get`
    /// for it must find it at once). Expired tasks are dropped on the way.
    pub async fn insert_task(&self, task: &TaskRecord, now_ms: i64) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                let mut tasks = lock(&mem.tasks);
                tasks.retain(|_, t| t.expires_ms > now_ms);
                tasks.insert(task.id.clone(), task.clone());
                Ok(())
            }
            Store::Sql(Sql { pool, .. }) => {
                sqlx::query("DELETE FROM tether_tasks WHERE expires_ms <= $1")
                    .bind(now_ms)
                    .execute(pool)
                    .await
                    .map_err(sql_error("drop expired tasks"))?;
                sqlx::query(
                    "INSERT INTO tether_tasks (id, principal, scope, upstream, upstream_task, runner, state, terminal, lease_ms, expires_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&task.id)
                .bind(&task.principal)
                .bind(&task.scope)
                .bind(&task.upstream)
                .bind(&task.upstream_task)
                .bind(&task.runner)
                .bind(&task.state)
                .bind(i64::from(task.terminal))
                .bind(task.lease_ms)
                .bind(task.expires_ms)
                .execute(pool)
                .await
                .map_err(sql_error("store task"))?;
                Ok(())
            }
        }
    }

    /// The task stored under `id`, unless it expired.
    pub async fn load_task(&self, id: &str, now_ms: i64) -> Result<Option<TaskRecord>, StoreError> {
        let task = match self {
            Store::Memory(mem) => lock(&mem.tasks).get(id).cloned(),
            Store::Sql(Sql { pool, .. }) => {
                let row = sqlx::query(
                    "SELECT id, principal, scope, upstream, upstream_task, runner, state, terminal, lease_ms, expires_ms
                     FROM tether_tasks WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(sql_error("load task"))?;
                row.map(|r| task_from(&r))
                    .transpose()
                    .map_err(sql_error("read task"))?
            }
        };
        Ok(task.filter(|t| t.expires_ms > now_ms))
    }

    /// Records a task's new state, unless its state is already final (the
    /// first final state wins: a cancellation is not overwritten by a late
    /// result; [invariant: task-durable]). `relayed`: the task now stands for this upstream task (its
    /// upstream answered with a task of its own). True if written.
    pub async fn update_task(
        &self,
        id: &str,
        state: &str,
        terminal: bool,
        relayed: Option<&str>,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(mem) => {
                let mut tasks = lock(&mem.tasks);
                let Some(task) = tasks.get_mut(id).filter(|t| !t.terminal) else {
                    return Ok(false);
                };
                task.state = state.to_owned();
                task.terminal = terminal;
                if let Some(upstream_task) = relayed {
                    task.upstream_task = Some(upstream_task.to_owned());
                    task.runner = None;
                }
                Ok(true)
            }
            Store::Sql(Sql { pool, .. }) => {
                let done = sqlx::query(
                    "UPDATE tether_tasks SET state = $2, terminal = $3,
                       upstream_task = COALESCE($4, upstream_task),
                       runner = CASE WHEN $4 IS NULL THEN runner ELSE NULL END
                     WHERE id = $1 AND terminal = 0",
                )
                .bind(id)
                .bind(state)
                .bind(i64::from(terminal))
                .bind(relayed)
                .execute(pool)
                .await
                .map_err(sql_error("update task"))?;
                Ok(done.rows_affected() > 0)
            }
        }
    }

    /// Renews the lease of every unfinished task `runner` runs.
    pub async fn renew_task_leases(&self, runner: &str, lease_ms: i64) -> Result<(), StoreError> {
        match self {
            Store::Memory(mem) => {
                for task in lock(&mem.tasks).values_mut() {
                    if !task.terminal && task.runner.as_deref() == Some(runner) {
                        task.lease_ms = lease_ms;
                    }
                }
                Ok(())
            }
            Store::Sql(Sql { pool, .. }) => {
                sqlx::query(
                    "UPDATE tether_tasks SET lease_ms = $2 WHERE runner = $1 AND terminal = 0",
                )
                .bind(runner)
                .bind(lease_ms)
                .execute(pool)
                .await
                .map_err(sql_error("renew task leases"))?;
                Ok(())
            }
        }
    }
}
