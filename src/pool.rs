//! A small scoped thread pool for independent jobs: one job per index on up to N threads,
//! indices handed out in a given order (for example the largest layer first), results kept in
//! index order, and no further work handed out after the first error, which is returned.
//! Used by the layer writer (src/oci), by push (src/push.rs) and by the closure's store walk
//! and scan (src/closure/store.rs), which streams its results ([`stream_in_order`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};

/// Runs `f(i)` for every `i` in `order` (a permutation of `0..order.len()`), handed out in
/// that order to up to `threads` threads; the result of `i` lands at index `i`. On errors,
/// the first one in index order is returned.
pub fn run_in_order<O: Send, E: Send>(
    order: &[usize],
    threads: usize,
    f: impl Fn(usize) -> Result<O, E> + Sync,
) -> Result<Vec<O>, E> {
    let n = order.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<O, E>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                if failed.load(Relaxed) {
                    return;
                }
                let k = next.fetch_add(1, Relaxed);
                let Some(&i) = order.get(k) else { return };
                let r = f(i);
                if r.is_err() {
                    failed.store(true, Relaxed);
                }
                slots.lock().expect("results lock")[i] = Some(r);
            });
        }
    });
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for r in slots.into_inner().expect("results lock") {
        match r {
            Some(Ok(o)) => out.push(o),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// [`run_in_order`] over `items` in their own order.
pub fn map<T: Sync, O: Send, E: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<O, E> + Sync,
) -> Result<Vec<O>, E> {
    let order: Vec<usize> = (0..items.len()).collect();
    run_in_order(&order, threads, |i| f(&items[i]))
}

/// [`map`] for results too many to hold at once: runs `f` over `items` on up to `threads`
/// threads and hands each result to `take`, on the calling thread and in item order, as soon
/// as it and every result before it are done. Workers run at most `ahead` items ahead of
/// `take`, so only that many wait in memory at once. The first error in item order (from `f`
/// or `take`) is returned and stops the workers; a panic in `f` is resumed on the calling
/// thread, and one in `take` stops the workers too.
pub fn stream_in_order<T: Sync, R: Send, E: Send>(
    items: &[T],
    threads: usize,
    ahead: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
    mut take: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E> {
    type Done<R, E> = std::thread::Result<Result<R, E>>;
    struct State<R, E> {
        ready: BTreeMap<usize, Done<R, E>>,
        taken: usize,
        stop: bool,
    }
    let threads = threads.clamp(1, items.len().max(1));
    let ahead = ahead.max(1);
    let next = AtomicUsize::new(0);
    let state = Mutex::new(State {
        ready: BTreeMap::new(),
        taken: 0,
        stop: false,
    });
    let changed = Condvar::new();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Relaxed);
                let Some(item) = items.get(i) else { break };
                {
                    let mut st = state.lock().unwrap();
                    while i >= st.taken + ahead && !st.stop {
                        st = changed.wait(st).unwrap();
                    }
                    if st.stop {
                        break;
                    }
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item)));
                state.lock().unwrap().ready.insert(i, r);
                changed.notify_all();
            });
        }
        // However this thread leaves (done, an error, a panic in `take`), the workers stop
        // instead of waiting for it forever.
        struct StopOnDrop<'a, R, E>(&'a Mutex<State<R, E>>, &'a Condvar);
        impl<R, E> Drop for StopOnDrop<'_, R, E> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
                self.1.notify_all();
            }
        }
        let _stop = StopOnDrop(&state, &changed);
        for i in 0..items.len() {
            let done = {
                let mut st = state.lock().unwrap();
                let done = loop {
                    match st.ready.remove(&i) {
                        Some(d) => break d,
                        None => st = changed.wait(st).unwrap(),
                    }
                };
                st.taken = i + 1;
                changed.notify_all();
                done
            };
            match done {
                Ok(r) => r.and_then(&mut take)?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;

    const THREADS: usize = 2;
    const AHEAD: usize = 8;

    fn err(n: usize) -> String {
        format!("item {n}")
    }

    #[test]
    fn stream_in_order_hands_results_over_in_item_order_with_few_waiting() {
        let items: Vec<usize> = (0..1000).collect();
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut seen = Vec::new();
        stream_in_order::<_, _, String>(
            &items,
            THREADS,
            AHEAD,
            |&i| {
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                // Later items finish first now and then, so results arrive out of order.
                if i % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
                Ok(i * 2)
            },
            |r| {
                // A slow taker: unbounded workers would run far ahead of it.
                std::thread::sleep(std::time::Duration::from_micros(50));
                in_flight.fetch_sub(1, SeqCst);
                seen.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        // Made but not yet taken: at most the window workers may run ahead, plus one each.
        assert!(
            most.load(SeqCst) <= AHEAD + THREADS + 1,
            "{} results waited at once",
            most.load(SeqCst)
        );
    }

    #[test]
    fn stream_in_order_returns_the_first_error_in_item_order_and_takes_nothing_after() {
        let items: Vec<usize> = (0..200).collect();
        let mut taken = Vec::new();
        let e = stream_in_order::<_, _, String>(
            &items,
            THREADS,
            AHEAD,
            |&i| {
                if i == 40 || i == 120 {
                    Err(err(i))
                } else {
                    Ok(i)
                }
            },
            |r| {
                taken.push(r);
                Ok(())
            },
        )
        .unwrap_err();
        assert!(e.contains("item 40"), "{e}");
        assert_eq!(taken, (0..40).collect::<Vec<_>>());

        // An error from the taker stops the run the same way.
        let mut taken = 0;
        let e = stream_in_order::<_, _, String>(
            &items,
            THREADS,
            AHEAD,
            |&i| Ok(i),
            |r| {
                taken += 1;
                if r == 10 {
                    Err(err(r))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(e.contains("item 10"), "{e}");
        assert_eq!(taken, 11);
    }

    #[test]
    fn stream_in_order_resumes_a_workers_panic_on_the_caller() {
        let items: Vec<usize> = (0..50).collect();
        let r = std::panic::catch_unwind(|| {
            stream_in_order::<_, _, String>(
                &items,
                THREADS,
                AHEAD,
                |&i| {
                    assert!(i != 30, "boom at 30");
                    Ok(i)
                },
                |_| Ok(()),
            )
        });
        let panic = r.unwrap_err();
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("boom at 30"), "{msg}");

        // A panic in the taker stops the workers too (they must not wait for it forever).
        let r = std::panic::catch_unwind(|| {
            stream_in_order::<_, _, String>(
                &(0..1000).collect::<Vec<usize>>(),
                THREADS,
                AHEAD,
                |&i| Ok(i),
                |i| {
                    assert!(i != 5, "taker gave up");
                    Ok(())
                },
            )
        });
        assert!(r.is_err());
    }

    #[test]
    fn results_keep_index_order_whatever_the_hand_out_order() {
        let order = [3, 1, 0, 2];
        let r: Result<Vec<usize>, ()> = run_in_order(&order, 3, |i| Ok(i * 10));
        assert_eq!(r, Ok(vec![0, 10, 20, 30]));
        let items = ["a", "bb", "ccc"];
        let r: Result<Vec<usize>, ()> = map(&items, 8, |s| Ok(s.len()));
        assert_eq!(r, Ok(vec![1, 2, 3]));
        let none: Result<Vec<u8>, ()> = map(&[] as &[u8], 4, |&b| Ok(b));
        assert_eq!(none, Ok(vec![]));
    }

    #[test]
    fn an_error_is_returned_and_stops_handing_out_work() {
        let ran = AtomicUsize::new(0);
        let items: Vec<usize> = (0..1000).collect();
        let r = map(&items, 1, |&i| {
            ran.fetch_add(1, Relaxed);
            if i == 5 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        });
        assert_eq!(r, Err("item 5".to_string()));
        assert_eq!(
            ran.load(Relaxed),
            6,
            "one thread stops right after the error"
        );
    }
}
