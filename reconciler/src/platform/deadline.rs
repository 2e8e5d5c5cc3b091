//! Deadlines that cannot overflow: `Instant + Duration` panics when the sum is out of range, and
//! a duration may come from a config file or a server (a token's `expires_in`).

use std::time::{Duration, Instant};

/// The longest wait any deadline here stands for (about 100 years): far enough to mean "never"
/// and near enough for every clock to represent.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `start + wait`, or `start + FOREVER` (and failing that `start`) when that overflows.
pub fn after(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait)
        .or_else(|| start.checked_add(FOREVER))
        .unwrap_or(start)
}

/// [`after`] for tokio's clock.
pub fn after_tokio(start: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(after(start.into_std(), wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enormous_wait_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) > now);
        assert!(after(now, Duration::from_secs(u64::MAX)) >= now);
        let t = tokio::time::Instant::now();
        assert!(after_tokio(t, Duration::MAX) > t);
    }
}
