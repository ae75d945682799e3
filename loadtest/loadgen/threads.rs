//! The client threads: every client of a scenario (gRPC or Postgres baseline) runs on one of
//! a few threads, each a current-thread runtime, and a gRPC channel's connection lives on the
//! thread of the clients that use it.
//!
//! Why: the clients share the machine with the server, so what they cost is taken from it.
//! On the multi-thread runtime a channel's connection task is woken on one worker while its
//! clients run on the other, a cross-thread wake-up per request and a request's frames
//! written in separate pieces. On one thread they take turns, and the requests queued while
//! the clients ran go out in one write. The Postgres baselines run on the same threads, so
//! both sides of every ratio are driven the same way.

use anyhow::{Context, Result};
use std::future::Future;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The threads; dropping this ends them (after their current tasks yield).
pub(crate) struct ClientThreads {
    handles: Vec<Handle>,
    _stop: Vec<oneshot::Sender<()>>,
}

impl ClientThreads {
    /// One thread per core, at most `most`.
    pub(crate) fn start(most: usize) -> Result<ClientThreads> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = most.clamp(1, cores);
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a client thread's runtime")?;
            handles.push(rt.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("er-client-{i}"))
                .spawn(move || {
                    // Runs the thread's tasks until the sender is dropped.
                    let _ = rt.block_on(rx);
                })
                .context("starting a client thread")?;
        }
        Ok(ClientThreads {
            handles,
            _stop: stop,
        })
    }

    /// Runs `fut` on thread `i` (modulo the number of threads).
    pub(crate) fn spawn<F>(&self, i: usize, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(fut)
    }
}
