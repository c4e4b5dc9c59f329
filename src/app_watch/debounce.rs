//! Collapsing a burst of changes into one restart: pure state over injected
//! instants, driven by the task in the parent module.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

/// A burst is cut after this many quiet times even if changes keep coming,
/// so an app whose tree is written constantly still restarts.
const MAX_WAIT_FACTOR: u32 = 10;

/// The changes seen since the last restart signal.
#[derive(Debug)]
pub(super) struct Debounce {
    /// The quiet time that ends a burst.
    quiet: Duration,
    /// The longest a burst may delay the signal, counted from its first change.
    max_wait: Duration,
    pending: Option<Burst>,
}

#[derive(Debug)]
struct Burst {
    /// The first path that changed: the restart reason names it.
    first_path: PathBuf,
    first_at: Instant,
    last_at: Instant,
}

impl Debounce {
    pub(super) fn new(quiet: Duration) -> Debounce {
        Debounce { quiet, max_wait: quiet.saturating_mul(MAX_WAIT_FACTOR), pending: None }
    }

    /// Records a change at `now`.
    pub(super) fn change(&mut self, path: PathBuf, now: Instant) {
        match &mut self.pending {
            Some(burst) => burst.last_at = now,
            None => self.pending = Some(Burst { first_path: path, first_at: now, last_at: now }),
        }
    }

    /// When the pending burst is due, if there is one.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let burst = self.pending.as_ref()?;
        Some((burst.last_at + self.quiet).min(burst.first_at + self.max_wait))
    }

    /// Ends the burst if it is due at `now`, returning its first path.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<PathBuf> {
        if self.deadline()? <= now { self.pending.take().map(|burst| burst.first_path) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_collapses_into_its_first_path_after_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::new(100 * MS);
        assert_eq!(d.deadline(), None);
        d.change("a".into(), t0);
        d.change("b".into(), t0 + 50 * MS);
        assert_eq!(d.deadline(), Some(t0 + 150 * MS));
        assert_eq!(d.take_due(t0 + 149 * MS), None);
        assert_eq!(d.take_due(t0 + 150 * MS), Some(PathBuf::from("a")));
        assert_eq!(d.deadline(), None, "the burst is consumed");
    }

    #[test]
    fn a_constant_stream_is_cut_at_ten_quiet_times() {
        let t0 = Instant::now();
        let mut d = Debounce::new(100 * MS);
        for i in 0..30 {
            d.change(format!("f{i}").into(), t0 + i * 50 * MS);
        }
        assert_eq!(d.deadline(), Some(t0 + 1000 * MS));
        assert_eq!(d.take_due(t0 + 1000 * MS), Some(PathBuf::from("f0")));
    }

    #[test]
    fn zero_debounce_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Duration::ZERO);
        d.change("a".into(), t0);
        assert_eq!(d.take_due(t0), Some(PathBuf::from("a")));
    }
}
