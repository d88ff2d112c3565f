//! A small scoped thread pool for independent jobs: one job per index on up to N threads,
//! indices handed out in a given order (for example the largest layer first), results kept in
//! index order, and no further work handed out after the first error, which is returned.
//! Used by the layer writer (src/oci) and by push (src/push.rs).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

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

#[cfg(test)]
mod tests {
    use super::*;

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
