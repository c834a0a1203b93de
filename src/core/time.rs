//! Time as an input: the core never reads a clock (architecture habit 1).
//!
//! Drivers stamp every input with the wall-clock time of receipt as a [`Timestamp`]
//! (milliseconds since the Unix epoch). Wall-clock rather than monotonic time because
//! expiries are persisted and must mean the same thing after a restart.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// Milliseconds since the Unix epoch, as given by a driver or a test's manual clock.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// Time left until `later`, zero if `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// Whole seconds left until `later`, rounded down, zero if already past.
    pub fn secs_until(self, later: Timestamp) -> u64 {
        later.0.saturating_sub(self.0) / 1000
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// A manual clock for tests and simulations: it only moves when told to.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Timestamp,
}

impl ManualClock {
    pub fn starting_at(now: Timestamp) -> Self {
        ManualClock { now }
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn advance(&mut self, by: Duration) -> Timestamp {
        self.now = self.now + by;
        self.now
    }

    pub fn set(&mut self, to: Timestamp) {
        assert!(to >= self.now, "a manual clock never goes back");
        self.now = to;
    }
}
