//! The process's memory allocator, and giving memory back when idle.
//!
//! glibc malloc spends a fifth of the relay's CPU time under load; mimalloc
//! is markedly cheaper for the many small, short-lived allocations of a proxy.
//! It keeps freed pages for reuse and returns them to the system lazily, when
//! the thread that owns them next allocates; a worker that goes idle after a
//! burst (thousands of sessions ended) would keep that memory for good.
//! [`tidy_when_idle`] runs as each runtime worker parks.

use std::cell::Cell;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// At most one collection per worker in this period: parking happens between
/// every burst of work, and a collection walks the thread's pages.
const TIDY_EVERY: Duration = Duration::from_secs(1);

unsafe extern "C" {
    /// mimalloc: frees the calling thread's empty pages (collecting blocks
    /// other threads freed into them) and returns memory due for release.
    fn mi_collect(force: bool);
}

/// Called by a runtime worker as it parks: at most once per [`TIDY_EVERY`],
/// hands the thread's empty pages back so they can be returned to the system.
pub fn tidy_when_idle() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    LAST.with(|last| {
        if last
            .get()
            .is_none_or(|t| now.duration_since(t) >= TIDY_EVERY)
        {
            last.set(Some(now));
            // SAFETY: mi_collect takes no pointers and may be called from any
            // thread at any time; it only touches the allocator's own state.
            unsafe { mi_collect(false) };
        }
    });
}
