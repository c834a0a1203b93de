//! Flood control per source (product.md, Security: "requests per peer per second"): a
//! fixed one-second window per source address for new (out-of-dialog) requests. Over the
//! limit the engine answers 503 with Retry-After (RFC 3261 §21.5.4) and logs once per
//! source per [`LOG_INTERVAL_SECS`]. Memory stays bounded: windows of past seconds are
//! dropped when the table grows past [`MAX_TRACKED`].

use std::collections::HashMap;
use std::net::IpAddr;

use super::time::Timestamp;

/// Least seconds between two log lines about the same source.
pub const LOG_INTERVAL_SECS: u64 = 10;
/// Sources tracked before stale windows are swept.
pub const MAX_TRACKED: usize = 10_000;

/// The verdict on one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FloodVerdict {
    Allow,
    /// Refuse with 503 and `Retry-After: retry_after`; `log` is true once per interval.
    Refuse {
        retry_after: u32,
        log: bool,
    },
}

#[derive(Clone, Debug, Default)]
struct Window {
    second: u64,
    count: u32,
    last_log: Option<u64>,
}

/// See the module docs. A limit of 0 turns it off.
#[derive(Clone, Debug, Default)]
pub struct SourceLimiter {
    limit: u32,
    windows: HashMap<IpAddr, Window>,
}

impl SourceLimiter {
    pub fn new(limit_per_second: u32) -> SourceLimiter {
        SourceLimiter {
            limit: limit_per_second,
            windows: HashMap::new(),
        }
    }

    /// Counts one new request from `source` at `now`.
    pub fn check(&mut self, now: Timestamp, source: IpAddr) -> FloodVerdict {
        if self.limit == 0 {
            return FloodVerdict::Allow;
        }
        let second = now.as_secs();
        if self.windows.len() >= MAX_TRACKED && !self.windows.contains_key(&source) {
            self.windows.retain(|_, w| {
                w.second == second || w.last_log.is_some_and(|l| l + LOG_INTERVAL_SECS > second)
            });
        }
        let w = self.windows.entry(source).or_default();
        if w.second != second {
            w.second = second;
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        if w.count <= self.limit {
            return FloodVerdict::Allow;
        }
        let log = w.last_log.is_none_or(|l| l + LOG_INTERVAL_SECS <= second);
        if log {
            w.last_log = Some(second);
        }
        FloodVerdict::Refuse {
            retry_after: 1,
            log,
        }
    }

    /// Sources currently tracked (bounded by [`MAX_TRACKED`] plus one second's sources).
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn requests_over_the_limit_in_one_second_are_refused_and_logged_once() {
        let mut l = SourceLimiter::new(2);
        let t = Timestamp::from_secs(100);
        assert_eq!(l.check(t, ip("192.0.2.1")), FloodVerdict::Allow);
        assert_eq!(l.check(t, ip("192.0.2.1")), FloodVerdict::Allow);
        assert_eq!(
            l.check(t, ip("192.0.2.1")),
            FloodVerdict::Refuse {
                retry_after: 1,
                log: true
            }
        );
        assert_eq!(
            l.check(t, ip("192.0.2.1")),
            FloodVerdict::Refuse {
                retry_after: 1,
                log: false
            }
        );
        assert_eq!(
            l.check(t, ip("192.0.2.2")),
            FloodVerdict::Allow,
            "per source"
        );
        assert_eq!(
            l.check(Timestamp::from_secs(101), ip("192.0.2.1")),
            FloodVerdict::Allow,
            "a new second, a new window"
        );
    }

    #[test]
    fn zero_limit_allows_everything() {
        let mut l = SourceLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(
                l.check(Timestamp::from_secs(1), ip("192.0.2.1")),
                FloodVerdict::Allow
            );
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_table_stays_bounded_under_many_sources() {
        let mut l = SourceLimiter::new(1);
        for i in 0..(MAX_TRACKED as u32 * 3) {
            let t = Timestamp::from_secs(10 + u64::from(i / 1000));
            l.check(t, IpAddr::from(i.to_be_bytes()));
        }
        assert!(l.tracked() <= MAX_TRACKED + 1000, "{}", l.tracked());
    }
}
