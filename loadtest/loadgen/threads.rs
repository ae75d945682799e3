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

use crate::rt::ThreadRuntime;
use anyhow::Result;
use std::future::Future;
use tokio::task::JoinHandle;

/// The threads; dropping this ends them (after their current tasks yield).
pub(crate) struct ClientThreads(Vec<ThreadRuntime>);

impl ClientThreads {
    /// One thread per core, at most `most`.
    pub(crate) fn start(most: usize) -> Result<ClientThreads> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (0..most.clamp(1, cores))
            .map(|i| ThreadRuntime::start(format!("er-client-{i}")))
            .collect::<Result<_>>()?;
        Ok(ClientThreads(threads))
    }

    /// Runs `fut` on thread `i` (modulo the number of threads).
    pub(crate) fn spawn<F>(&self, i: usize, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0[i % self.0.len()].handle().spawn(fut)
    }
}
