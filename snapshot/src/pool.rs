//! Runs independent jobs on every core: copying, linking and unlinking are syscall- or
//! hash-bound, and the machines this runs on have few cores but more than one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Result;

pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

/// For work bound by I/O latency (reading cold files): more workers than cores keep the
/// disk's queue full while each waits for its reads.
pub fn io_threads() -> usize {
    threads().saturating_mul(4).clamp(8, 16)
}

/// Calls `f` on every item from `io_threads()` workers, each with its own state made by
/// `init` (e.g. a cache of open directories); stops handing out work at the first error and
/// returns it.
pub fn for_each_with<T: Sync, S>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failure = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..io_threads().min(items.len().max(1)) {
            s.spawn(|| {
                let mut state = init();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(&mut state, item) {
                        next.store(items.len(), Ordering::Relaxed);
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `f(i)` for every `i` below `n` on `io_threads()` workers (each one waiting on the disk,
/// e.g. a cold lstat), the results in order of `i` (a result lost to a panicking worker is
/// `R::default()`, which callers choose to mean "not known").
pub fn map<R: Send + Default>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let idx: Vec<usize> = (0..n).collect();
    // `f` cannot fail, so neither can the walk over the indices.
    let _ = for_each_with(
        &idx,
        || (),
        |(), &i| {
            let r = f(i);
            if let Ok(mut slot) = slots[i].lock() {
                *slot = Some(r);
            }
            Ok(())
        },
    );
    slots
        .into_iter()
        .map(|m| m.into_inner().ok().flatten().unwrap_or_default())
        .collect()
}
