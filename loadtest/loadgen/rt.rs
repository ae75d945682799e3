//! A named thread running a current-thread tokio runtime of its own, until stopped or dropped.
//! The load generator (`er-loadgen`) runs its clients on such threads, so each client's
//! connection and its calls take turns on one thread (the reason is with the user); the node
//! itself runs on its ordinary multi-thread runtime.

use anyhow::Context;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The thread and its runtime; dropping this stops them (tasks still on it are dropped).
pub struct ThreadRuntime {
    handle: Handle,
    stop: CancellationToken,
}

impl ThreadRuntime {
    /// Builds the runtime here and starts the thread `name` that drives it.
    pub fn start(name: impl Into<String>) -> anyhow::Result<ThreadRuntime> {
        let name = name.into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("starting {name}'s runtime"))?;
        let handle = rt.handle().clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || rt.block_on(stopped.cancelled()))
            .with_context(|| format!("starting thread {name}"))?;
        Ok(ThreadRuntime { handle, stop })
    }

    /// Spawns work on this thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for ThreadRuntime {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_named_thread_and_stops_with_it() {
        let rt = ThreadRuntime::start("er-test-rt").expect("start");
        let name = rt
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("er-test-rt"));
        let pending = rt.handle().spawn(std::future::pending::<()>());
        drop(rt);
        // The runtime's end drops the task still on it.
        assert!(pending.await.expect_err("dropped").is_cancelled());
    }
}
