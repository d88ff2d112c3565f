//! A busy worker gives its core up now and then, so that whatever shares the machine with
//! the origin (a load generator, a player, a sidecar) is not kept waiting a whole scheduler
//! slice, and neither are the requests it sends meanwhile.
//!
//! Under load a worker answers all the time, and the kernel shares its core between it and
//! the other runnable threads in slices of a few milliseconds: a request sent while its
//! worker is switched out, or an answer sent while its reader is, waits that long. Measured
//! on 2 cores with wrk beside the origin (`wrk -t2 -c64 --latency` on the playlist, 5 s,
//! docs/origin-performance.md): without yielding p50 0.10 ms but p99 7.5-7.8 ms at 147-152k
//! req/s; a worker that calls `sched_yield` at most once per [`YIELD_AFTER`] of answering:
//! p99 1.1-1.6 ms at 130-150k req/s (budgets of 200-500 µs). Yielding after every answer or
//! every few (as nginx's workers in effect do, sleeping per request) cut p99 as much but the
//! rate by 25-45 %. Counting from each wake-up out of `epoll_wait` instead (tokio's
//! `on_thread_unpark`) took the gain away: the worker sleeps briefly and often, so it never
//! reached the budget. Where nothing else wants the core, `sched_yield` returns at once: at
//! most one cheap syscall per [`YIELD_AFTER`].
//!
//! Each worker thread calls [`answered`] after each answer.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a worker answers before it yields its core once.
pub const YIELD_AFTER: Duration = Duration::from_micros(250);

thread_local! {
    /// Since when this worker has answered without yielding: its first answer or last yield.
    static RUNNING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The worker finished an answer at `now` (the clock read that ended the request): yields
/// the core when [`YIELD_AFTER`] has passed since its first answer or last yield. Whether it
/// did.
pub fn answered(now: Instant) -> bool {
    RUNNING_SINCE.with(|s| match s.get() {
        None => {
            s.set(Some(now));
            false
        }
        Some(since) if now.saturating_duration_since(since) < YIELD_AFTER => false,
        Some(_) => {
            // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
            unsafe { libc::sched_yield() };
            // The time spent switched out is not busy time: count from the return.
            s.set(Some(Instant::now()));
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_yields_once_per_budget_of_answering_counted_from_the_last_yield() {
        std::thread::spawn(|| {
            let t0 = Instant::now();
            // The first answer of a thread starts its busy time.
            assert!(!answered(t0));
            assert!(!answered(t0 + YIELD_AFTER / 2));
            assert!(answered(t0 + YIELD_AFTER));
            // Counted again from the yield's return, not from t0.
            let after = RUNNING_SINCE.with(Cell::get).unwrap();
            assert!(after >= t0);
            assert!(!answered(after + YIELD_AFTER / 2));
            assert!(answered(after + YIELD_AFTER * 3));
            let again = RUNNING_SINCE.with(Cell::get).unwrap();
            assert!(again >= after);
            assert!(!answered(again));
        })
        .join()
        .unwrap();
    }
}
