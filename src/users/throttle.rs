//! Sign-in throttling: after [`MAX_FAILURES`] wrong passwords for one email within
//! [`WINDOW`], that email cannot sign in on this node until the window ends, so passwords
//! cannot be guessed at the speed of the network. Kept per node, in memory and bounded: a
//! cluster of N nodes allows N times the attempts, which still turns guessing from millions per
//! hour into dozens. The right password does not bypass an active block.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed per email and window.
pub const MAX_FAILURES: u32 = 10;
/// Length of the window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Emails tracked at most (bounds memory under a spray of made-up addresses).
const MAX_TRACKED: usize = 10_000;

/// Failure counts by email.
#[derive(Default)]
pub struct Throttle {
    // A std mutex: held only for a map lookup or update, never across an await.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// Time left before `email` may try again, if it is blocked now.
    pub fn blocked_for(&self, email: &str) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = map.get(email)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*n >= MAX_FAILURES).then_some(left)
    }

    /// Counts a wrong password.
    pub fn failed(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(email.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets the failures of an email after a successful sign-in.
    pub fn succeeded(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_success_clears() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("a@b");
        }
        assert!(t.blocked_for("a@b").is_none());
        t.failed("a@b");
        assert!(t.blocked_for("a@b").is_some());
        assert!(
            t.blocked_for("c@d").is_none(),
            "other emails are not affected"
        );
        t.succeeded("a@b");
        assert!(t.blocked_for("a@b").is_none());
    }
}
