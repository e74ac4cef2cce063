//! Wall-clock time behind a handle, so rules that depend on it (an unpaid order's
//! deadline, a token's expiry) can be tested by moving time instead of waiting for it.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// Where "now" comes from.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Mutex<DateTime<Utc>>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it (tests).
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(Mutex::new(start))),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            Some(t) => *t.lock().expect("clock lock poisoned"),
            None => Utc::now(),
        }
    }

    /// Moves a manual clock forward (the system clock ignores it).
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            *t.lock().expect("clock lock poisoned") += by;
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            Some(_) => write!(f, "Clock::manual({})", self.now()),
            None => f.write_str("Clock::system"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = Utc::now() - Duration::days(1);
        let clock = Clock::manual(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::minutes(15));
        assert_eq!(
            clock.now(),
            start + Duration::minutes(15),
            "clones share the time"
        );
        assert!(Clock::system().now() > clock.now());
    }
}
