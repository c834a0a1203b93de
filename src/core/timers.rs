//! The timer table: every timer the core keeps, keyed by its owner.
//!
//! A key identifies what the timer is for (a transaction's Timer F, a subscription's
//! refresh); setting a key again moves it, so an owner never has two copies of one timer.
//! The engine asks [`TimerTable::next_deadline`] for the single deadline drivers sleep to,
//! and drains [`TimerTable::pop_expired`] when an input carries a time at or past it.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use super::time::Timestamp;

#[derive(Debug)]
pub struct TimerTable<K: Clone + Eq + Hash + Ord> {
    by_deadline: BTreeSet<(Timestamp, u64, K)>,
    by_key: HashMap<K, (Timestamp, u64)>,
    seq: u64,
}

impl<K: Clone + Eq + Hash + Ord> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_deadline: BTreeSet::new(),
            by_key: HashMap::new(),
            seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> TimerTable<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `key` to fire at `at`, replacing any earlier deadline of the same key.
    pub fn set(&mut self, key: K, at: Timestamp) {
        self.cancel(&key);
        self.seq += 1;
        self.by_deadline.insert((at, self.seq, key.clone()));
        self.by_key.insert(key, (at, self.seq));
    }

    /// Disarms `key`; returns whether it was armed.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.by_key.remove(key) {
            Some((at, seq)) => {
                self.by_deadline.remove(&(at, seq, key.clone()));
                true
            }
            None => false,
        }
    }

    pub fn deadline_of(&self, key: &K) -> Option<Timestamp> {
        self.by_key.get(key).map(|(at, _)| *at)
    }

    pub fn is_set(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.by_deadline.iter().next().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`, in deadline order (ties in
    /// arming order).
    pub fn pop_expired(&mut self, now: Timestamp) -> Option<K> {
        let first = self.by_deadline.iter().next()?.clone();
        if first.0 > now {
            return None;
        }
        self.by_deadline.remove(&first);
        self.by_key.remove(&first.2);
        Some(first.2)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resetting_a_key_moves_its_deadline() {
        let mut t = TimerTable::new();
        t.set("a", Timestamp(10));
        t.set("a", Timestamp(30));
        assert_eq!(t.next_deadline(), Some(Timestamp(30)));
        assert_eq!(t.pop_expired(Timestamp(20)), None);
        assert_eq!(t.pop_expired(Timestamp(30)), Some("a"));
        assert!(t.is_empty());
    }

    #[test]
    fn expired_timers_pop_in_deadline_order() {
        let mut t = TimerTable::new();
        t.set("late", Timestamp(20));
        t.set("early", Timestamp(10));
        assert_eq!(t.pop_expired(Timestamp(25)), Some("early"));
        assert_eq!(t.pop_expired(Timestamp(25)), Some("late"));
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let mut t = TimerTable::new();
        t.set(1u32, Timestamp(5));
        assert!(t.cancel(&1));
        assert_eq!(t.pop_expired(Timestamp(100)), None);
    }
}
