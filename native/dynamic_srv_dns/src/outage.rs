//! Turns a stream of lookup outcomes into outage transitions, so a DNS outage is logged once
//! when it starts and once when it ends, not once per lookup that fails during it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one lookup outcome means for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// DNS answered and nothing was wrong before: nothing to report.
    Healthy,
    /// The first failure after answers: warn once.
    Started,
    /// Another failure during an outage: this is failure number `failures`.
    Ongoing { failures: u64 },
    /// The first answer after an outage of `failures` failed lookups lasting `lasted`.
    Ended { failures: u64, lasted: Duration },
}

#[derive(Debug, Default)]
pub struct OutageTracker {
    /// Start and failure count of the current outage.
    current: Mutex<Option<(Instant, u64)>>,
}

impl OutageTracker {
    pub fn failed(&self, now: Instant) -> Transition {
        let mut current = self.lock();
        match current.as_mut() {
            None => {
                *current = Some((now, 1));
                Transition::Started
            }
            Some((_, failures)) => {
                *failures += 1;
                Transition::Ongoing {
                    failures: *failures,
                }
            }
        }
    }

    pub fn answered(&self, now: Instant) -> Transition {
        match self.lock().take() {
            None => Transition::Healthy,
            Some((since, failures)) => Transition::Ended {
                failures,
                lasted: now.saturating_duration_since(since),
            },
        }
    }

    pub fn in_outage(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, u64)>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_start_and_one_end_per_outage() {
        let tracker = OutageTracker::default();
        let t0 = Instant::now();
        assert_eq!(tracker.answered(t0), Transition::Healthy);
        assert_eq!(tracker.failed(t0), Transition::Started);
        assert!(tracker.in_outage());
        for n in 2..=5 {
            assert_eq!(
                tracker.failed(t0 + Duration::from_secs(n)),
                Transition::Ongoing { failures: n }
            );
        }
        assert_eq!(
            tracker.answered(t0 + Duration::from_secs(9)),
            Transition::Ended {
                failures: 5,
                lasted: Duration::from_secs(9)
            }
        );
        assert!(!tracker.in_outage());
        assert_eq!(tracker.answered(t0), Transition::Healthy);
        assert_eq!(tracker.failed(t0), Transition::Started);
    }
}
