//! stdio upstreams: Tether starts the server program in its own process
//! group and speaks newline-delimited JSON-RPC on its stdin/stdout; its
//! stderr goes to Tether's log under the upstream's name.

use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tether_wire::lines::{self, Line};
use tokio::io::BufReader;
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::watch;

use super::backoff::LogThrottle;
use super::endpoint::MAX_UPSTREAM_MESSAGE;
use super::error::{Cause, UpstreamError};
use super::link::{Closer, Link};
use crate::config::UpstreamConfig;

/// Messages queued for a process's stdin.
const STDIN_QUEUE: usize = 64;
/// How long a process may take to exit after its stdin closes, and again after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_millis(1000);
/// Longest stderr line logged (the rest is cut).
const MAX_LOG_LINE: usize = 4096;

/// A running server process, stopped with its whole process group.
struct Process {
    pid: Option<u32>,
    writer: tokio::task::AbortHandle,
    exited: watch::Receiver<bool>,
}

impl Process {
    /// Closes stdin, then sends SIGTERM and finally SIGKILL to the process
    /// group, each after a short grace period; bounded in time.
    async fn stop(mut self) {
        self.writer.abort();
        if self.wait_exit(EXIT_GRACE).await {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_exit(EXIT_GRACE).await {
            return;
        }
        self.signal(libc::SIGKILL);
    }

    async fn wait_exit(&mut self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.exited.wait_for(|exited| *exited))
            .await
            .is_ok()
    }

    fn signal(&self, signal: libc::c_int) {
        if *self.exited.borrow() {
            return;
        }
        if let Some(pid) = self.pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // The child leads its own process group: this reaches its children too.
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

impl Closer for Process {
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin((*self).stop())
    }
}

impl Drop for Process {
    /// A process whose link was dropped without closing does not outlive it.
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Starts the upstream's command and links to it.
pub async fn spawn(
    name: &Arc<str>,
    config: &UpstreamConfig,
    shared: bool,
) -> Result<Arc<Link>, UpstreamError> {
    let (program, args) = config
        .command
        .split_first()
        .ok_or_else(|| UpstreamError::Connect("no command configured".into()))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(&config.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &config.cwd {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| {
        let e = std::io::Error::new(e.kind(), format!("cannot start {program:?}: {e}"));
        UpstreamError::Connect(Cause::new(e))
    })?;
    let pid = child.id();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(UpstreamError::Connect("child pipes unavailable".into()));
    };
    let (tx, writer_done) = lines::spawn_writer(stdin, STDIN_QUEUE);
    // The process's stdin writer takes the lines (see `Outbound` for a channel).
    let link = Link::new(name.clone(), Box::new(tx), shared);
    let writer = writer_done.abort_handle();
    let watched = Arc::downgrade(&link);
    tokio::spawn(async move {
        if let Ok(Err(e)) = writer_done.await
            && let Some(link) = watched.upgrade()
        {
            link.fail(&format!("writing to the upstream process failed: {e}"));
        }
    });
    tokio::spawn(read_messages(stdout, Arc::downgrade(&link)));
    tokio::spawn(log_stderr(stderr, name.clone()));
    let (exited_tx, exited) = watch::channel(false);
    let owner = name.clone();
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => {
                tracing::info!(upstream = %owner, pid, %status, "upstream process exited")
            }
            Err(e) => {
                tracing::warn!(upstream = %owner, error = %e, "waiting for upstream process failed")
            }
        }
        let _ = exited_tx.send(true);
    });
    tracing::debug!(upstream = %name, pid, "started upstream process");
    link.set_closer(Box::new(Process {
        pid,
        writer,
        exited,
    }));
    Ok(link)
}

async fn read_messages(stdout: ChildStdout, link: Weak<Link>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let reason = loop {
        let read = lines::read_line(&mut reader, &mut line, MAX_UPSTREAM_MESSAGE).await;
        let Some(link) = link.upgrade() else { return };
        match read {
            Ok(Line::Text([])) => {}
            Ok(Line::Text(text)) => link.incoming(Bytes::copy_from_slice(text)),
            Ok(Line::TooLong) => {
                tracing::warn!("upstream process wrote a message over 16 MiB; skipped")
            }
            Ok(Line::Eof) => break "the upstream process exited".to_owned(),
            Err(e) => break format!("reading from the upstream process failed: {e}"),
        }
    };
    if let Some(link) = link.upgrade() {
        link.fail(&reason);
    }
}

/// Logs the process's stderr line by line; a flood is thinned out.
async fn log_stderr(stderr: ChildStderr, upstream: Arc<str>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut throttle = LogThrottle::new(1000, 100);
    loop {
        let text = match lines::read_line(&mut reader, &mut line, MAX_LOG_LINE).await {
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong) => "(a stderr line over 4 KiB, not shown)".into(),
            Ok(Line::Text([])) => continue,
            Ok(Line::Text(text)) => String::from_utf8_lossy(text),
        };
        if throttle.allow() {
            tracing::info!(target: "tether::upstream::stderr", upstream = %upstream, lines = throttle.seen(), "{text}");
        }
    }
}
