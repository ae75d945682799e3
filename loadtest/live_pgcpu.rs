//! The Postgres CPU of `er-live-bench --storm`: the user and system time of every `postgres`
//! process on the machine (postmaster, background workers and every backend), summed over a
//! window, in CPU-seconds.
//!
//! Backends come and go during a window (a drained node's pool connections end with it, the
//! remaining nodes open new ones), so two snapshots would lose the time of a backend that
//! exited in between. A sampler thread therefore reads `/proc` every 100 ms and keeps, per
//! process, the counter at its first sighting and at its latest: a process already running
//! when the window opened counts from its first reading, one that started later counts from
//! zero, and one that exited keeps what it had used at its last reading (at most one sampling
//! interval of its time is lost). Processes are keyed by pid and start time, so a reused pid
//! is a new process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// How often the sampler reads `/proc`.
const EVERY: Duration = Duration::from_millis(100);

/// A process: its pid and its start time (ticks after boot).
type Key = (u32, u64);

/// CPU ticks per process over a window, from successive readings.
#[derive(Default, Debug)]
pub struct Accum {
    /// Ticks at each process' first reading (zero for one that started within the window).
    base: HashMap<Key, u64>,
    /// Ticks at each process' latest reading.
    last: HashMap<Key, u64>,
    opened: bool,
}

impl Accum {
    /// Takes one reading of every process of interest.
    pub fn observe(&mut self, reading: &[(Key, u64)]) {
        for &(key, ticks) in reading {
            let base = if self.opened { 0 } else { ticks };
            self.base.entry(key).or_insert(base);
            self.last.insert(key, ticks);
        }
        self.opened = true;
    }

    /// Ticks used within the window by every process seen.
    pub fn ticks(&self) -> u64 {
        self.last
            .iter()
            .map(|(k, t)| t.saturating_sub(self.base.get(k).copied().unwrap_or(0)))
            .sum()
    }
}

/// One `/proc/<pid>/stat` line: the command name and (start time, utime + stime).
fn parse_stat(stat: &str) -> Option<(&str, u64, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    // Fields after the command: state is the 1st, utime and stime the 12th and 13th, the
    // start time the 20th.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((comm, num(19)?, num(11)? + num(12)?))
}

/// Every `postgres` process now, with its CPU ticks.
fn read_postgres() -> Vec<(Key, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone since the listing
        };
        if let Some(("postgres", start, ticks)) = parse_stat(&stat) {
            out.push(((pid, start), ticks));
        }
    }
    out
}

/// The readings so far (a sampler that panicked left them as they were).
fn lock(accum: &Mutex<Accum>) -> MutexGuard<'_, Accum> {
    accum.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running measurement of Postgres' CPU; [`PgCpu::stop`] ends it.
pub struct PgCpu {
    accum: Arc<Mutex<Accum>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PgCpu {
    /// Opens a window now (the first reading is taken before this returns).
    pub fn start() -> PgCpu {
        let accum = Arc::new(Mutex::new(Accum::default()));
        lock(&accum).observe(&read_postgres());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accum, stop) = (accum.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    let reading = read_postgres();
                    lock(&accum).observe(&reading);
                }
            })
        };
        PgCpu {
            accum,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the window (one last reading) and returns Postgres' CPU-seconds within it.
    pub fn stop(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut accum = lock(&self.accum);
        accum.observe(&read_postgres());
        accum.ticks() as f64 / TICKS_PER_SECOND
    }
}

impl Drop for PgCpu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_count_from_their_first_reading_and_keep_their_last() {
        let mut a = Accum::default();
        // Open: two processes already running.
        a.observe(&[((1, 10), 500), ((2, 20), 100)]);
        assert_eq!(a.ticks(), 0);
        // Process 3 starts within the window; process 2 has used 5 ticks.
        a.observe(&[((1, 10), 500), ((2, 20), 105), ((3, 30), 7)]);
        assert_eq!(a.ticks(), 12);
        // Process 2 exits (its 5 ticks stay); pid 1 is reused by a new process.
        a.observe(&[((1, 10), 510), ((3, 30), 9), ((1, 40), 2)]);
        assert_eq!(a.ticks(), 10 + 5 + 9 + 2);
    }

    #[test]
    fn stat_lines_with_spaces_in_the_name() {
        let line = "42 (postgres) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 \
                    1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("postgres", 12345, 10)));
        let odd = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99 0 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b", 99, 3)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
