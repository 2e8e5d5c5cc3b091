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
