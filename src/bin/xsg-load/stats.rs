//! Accounting of measured updates: latency percentiles, per-second rates, and the loss
//! rule ("the last state per presentity must be the latest sequence number sent").

use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency percentiles in milliseconds (nearest-rank on the sorted samples).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest value with at least `p`% of
/// the samples at or below it.
pub fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises latency samples given in microseconds.
pub fn percentiles(samples_us: &[u64]) -> Percentiles {
    let mut s = samples_us.to_vec();
    s.sort_unstable();
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: s.len(),
        p50_ms: ms(nearest_rank(&s, 50.0)),
        p90_ms: ms(nearest_rank(&s, 90.0)),
        p99_ms: ms(nearest_rank(&s, 99.0)),
        max_ms: ms(s.last().copied().unwrap_or(0)),
    }
}

/// Counts events per whole second since a start instant.
#[derive(Clone, Debug)]
pub struct PerSecond {
    start: Instant,
    bins: Vec<u64>,
}

/// Summary of a [`PerSecond`] series.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RateSummary {
    pub seconds: usize,
    pub total: u64,
    pub mean_per_s: f64,
    pub busiest_per_s: u64,
    /// busiest / mean; 0 when there were no events.
    pub busiest_over_mean: f64,
}

impl PerSecond {
    pub fn new(start: Instant) -> Self {
        PerSecond {
            start,
            bins: Vec::new(),
        }
    }

    pub fn add(&mut self, at: Instant) {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        // Bounded: a run never lasts more than a day.
        if i >= 86_400 {
            return;
        }
        if self.bins.len() <= i {
            self.bins.resize(i + 1, 0);
        }
        self.bins[i] += 1;
    }

    /// Summarises over exactly `seconds` bins (missing bins count as zero).
    pub fn summary(&self, seconds: usize) -> RateSummary {
        let seconds = seconds.max(1);
        let bins: Vec<u64> = (0..seconds)
            .map(|i| self.bins.get(i).copied().unwrap_or(0))
            .collect();
        let total: u64 = bins.iter().sum();
        let mean = total as f64 / seconds as f64;
        let busiest = bins.iter().copied().max().unwrap_or(0);
        RateSummary {
            seconds,
            total,
            mean_per_s: mean,
            busiest_per_s: busiest,
            busiest_over_mean: if total == 0 {
                0.0
            } else {
                busiest as f64 / mean
            },
        }
    }

    pub fn busiest(&self) -> u64 {
        self.bins.iter().copied().max().unwrap_or(0)
    }
}

/// One direction's updates: what was sent per presentity, what arrived, and when.
///
/// Sequence numbers are global per flow and start at 1, so a delivered `seq` names both
/// the presentity and the send instant. A delivery of a seq older than the presentity's
/// last delivered one is *stale* (reordered); a repeat is a *duplicate*; neither counts
/// as delivered. Updates overtaken before delivery (coalesced by the gateway, or lost)
/// are `superseded`. Loss is judged at the end: a presentity whose last delivered seq is
/// not its last sent seq ended in the wrong state.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Send instant and presentity of seq `k` at index `k - 1`.
    sent: Vec<(Instant, u32)>,
    last_sent: Vec<u64>,
    last_delivered: Vec<u64>,
    latencies_us: Vec<u64>,
    pub delivered: u64,
    pub duplicates: u64,
    pub stale: u64,
    /// Deliveries naming a seq the flow never sent, or the wrong presentity.
    pub unknown: u64,
    pub first_send: Option<Instant>,
    pub last_delivery: Option<Instant>,
}

/// Final figures of a [`Flow`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FlowReport {
    pub presentities: usize,
    pub sent: u64,
    pub delivered: u64,
    /// sent − delivered: coalesced by the gateway or lost.
    pub superseded: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub unknown: u64,
    /// Presentities whose last delivered state is not the last one sent.
    pub wrong_final: usize,
    /// Delivered updates per second between the first send and the last delivery.
    pub delivered_per_s: f64,
    pub latency: Percentiles,
}

impl Flow {
    pub fn new(presentities: usize) -> Self {
        Flow {
            sent: Vec::new(),
            last_sent: vec![0; presentities],
            last_delivered: vec![0; presentities],
            latencies_us: Vec::new(),
            delivered: 0,
            duplicates: 0,
            stale: 0,
            unknown: 0,
            first_send: None,
            last_delivery: None,
        }
    }

    pub fn presentities(&self) -> usize {
        self.last_sent.len()
    }

    /// Allocates the next seq for `presentity`, sent at `at`.
    pub fn send(&mut self, presentity: usize, at: Instant) -> u64 {
        self.sent.push((at, presentity as u32));
        let seq = self.sent.len() as u64;
        if let Some(s) = self.last_sent.get_mut(presentity) {
            *s = seq;
        }
        self.first_send.get_or_insert(at);
        seq
    }

    /// Records that `seq` arrived for `presentity` at `at`.
    pub fn deliver(&mut self, presentity: usize, seq: u64, at: Instant) {
        let Some((sent_at, owner)) = seq
            .checked_sub(1)
            .and_then(|i| self.sent.get(i as usize))
            .copied()
        else {
            self.unknown += 1;
            return;
        };
        if owner as usize != presentity {
            self.unknown += 1;
            return;
        }
        let Some(last) = self.last_delivered.get_mut(presentity) else {
            self.unknown += 1;
            return;
        };
        if seq == *last {
            self.duplicates += 1;
            return;
        }
        if seq < *last {
            self.stale += 1;
            return;
        }
        *last = seq;
        self.delivered += 1;
        self.latencies_us
            .push(at.saturating_duration_since(sent_at).as_micros() as u64);
        self.last_delivery = Some(at);
    }

    /// Whether `presentity` has nothing outstanding.
    pub fn settled(&self, presentity: usize) -> bool {
        self.last_sent.get(presentity) == self.last_delivered.get(presentity)
    }

    /// Whether every presentity's last state arrived.
    pub fn all_settled(&self) -> bool {
        self.last_sent == self.last_delivered
    }

    /// Send instant of the presentity's outstanding update, if any.
    pub fn outstanding_since(&self, presentity: usize) -> Option<Instant> {
        if self.settled(presentity) {
            return None;
        }
        let seq = *self.last_sent.get(presentity)?;
        self.sent.get(seq.checked_sub(1)? as usize).map(|(t, _)| *t)
    }

    /// The last seq sent for `presentity` (0 when none).
    pub fn last_sent(&self, presentity: usize) -> u64 {
        self.last_sent.get(presentity).copied().unwrap_or(0)
    }

    pub fn sent_count(&self) -> u64 {
        self.sent.len() as u64
    }

    pub fn report(&self) -> FlowReport {
        let wrong_final = self
            .last_sent
            .iter()
            .zip(&self.last_delivered)
            .filter(|(s, d)| s != d)
            .count();
        let span = match (self.first_send, self.last_delivery) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        FlowReport {
            presentities: self.presentities(),
            sent: self.sent_count(),
            delivered: self.delivered,
            superseded: self.sent_count().saturating_sub(self.delivered),
            duplicates: self.duplicates,
            stale: self.stale,
            unknown: self.unknown,
            wrong_final,
            delivered_per_s: if span.is_zero() {
                0.0
            } else {
                self.delivered as f64 / span.as_secs_f64()
            },
            latency: percentiles(&self.latencies_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&s, 50.0), 50);
        assert_eq!(nearest_rank(&s, 90.0), 90);
        assert_eq!(nearest_rank(&s, 99.0), 99);
        assert_eq!(nearest_rank(&s, 100.0), 100);
    }

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let p = percentiles(&[3000, 1000, 2000]);
        assert_eq!(p.count, 3);
        assert_eq!(p.p50_ms, 2.0);
        assert_eq!(p.max_ms, 3.0);
    }

    #[test]
    fn empty_samples_give_zeroes() {
        assert_eq!(percentiles(&[]), Percentiles::default());
    }

    #[test]
    fn delivery_latency_is_arrival_minus_send() {
        let t0 = Instant::now();
        let mut f = Flow::new(2);
        let seq = f.send(1, t0);
        f.deliver(1, seq, t0 + Duration::from_millis(7));
        let r = f.report();
        assert_eq!(r.delivered, 1);
        assert_eq!(r.latency.p50_ms, 7.0);
        assert_eq!(r.wrong_final, 0);
    }

    #[test]
    fn coalesced_updates_are_superseded_not_wrong_when_last_arrives() {
        let t0 = Instant::now();
        let mut f = Flow::new(1);
        f.send(0, t0);
        f.send(0, t0);
        let last = f.send(0, t0);
        f.deliver(0, last, t0 + Duration::from_millis(1));
        let r = f.report();
        assert_eq!(
            (r.sent, r.delivered, r.superseded, r.wrong_final),
            (3, 1, 2, 0)
        );
        assert!(f.all_settled());
    }

    #[test]
    fn missing_last_update_counts_as_wrong_final_state() {
        let t0 = Instant::now();
        let mut f = Flow::new(2);
        let a = f.send(0, t0);
        f.send(1, t0);
        f.deliver(0, a, t0);
        assert_eq!(f.report().wrong_final, 1);
        assert!(!f.all_settled());
    }

    #[test]
    fn older_seq_after_newer_is_stale_and_does_not_regress_state() {
        let t0 = Instant::now();
        let mut f = Flow::new(1);
        let a = f.send(0, t0);
        let b = f.send(0, t0);
        f.deliver(0, b, t0);
        f.deliver(0, a, t0);
        f.deliver(0, b, t0);
        let r = f.report();
        assert_eq!(
            (r.delivered, r.stale, r.duplicates, r.wrong_final),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn seq_delivered_to_the_wrong_presentity_is_unknown() {
        let t0 = Instant::now();
        let mut f = Flow::new(2);
        let a = f.send(0, t0);
        f.deliver(1, a, t0);
        f.deliver(0, 99, t0);
        assert_eq!(f.report().unknown, 2);
    }

    #[test]
    fn per_second_summary_reports_busiest_over_mean() {
        let t0 = Instant::now();
        let mut p = PerSecond::new(t0);
        for _ in 0..3 {
            p.add(t0);
        }
        p.add(t0 + Duration::from_millis(1500));
        let s = p.summary(2);
        assert_eq!((s.total, s.busiest_per_s), (4, 3));
        assert_eq!(s.mean_per_s, 2.0);
        assert_eq!(s.busiest_over_mean, 1.5);
    }
}
