//! The machine's limit: a raw loopback UDP forwarder moving the same NOTIFY-sized
//! messages the gateway moves. sender → forwarder → receiver, three threads, three
//! sockets; the forwarder does nothing but `recv_from` + `send_to`. Its figures are the
//! denominators of the gateway's ratios.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procfs;
use crate::stats::{percentiles, Percentiles};

/// Placeholder the sender overwrites with a fixed-width sequence number.
pub const SEQ_FIELD: &str = "seq 0000000000";
const SEQ_DIGITS: usize = 10;

/// How the sender paces itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Open loop: this many messages per second, whatever the receiver does.
    Rate(f64),
    /// Closed loop: as fast as possible with at most this many messages in flight.
    Max { window: usize },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub pace: Pace,
    pub duration: Duration,
    /// Hard cap on messages sent (bounds memory and time).
    pub max_messages: u64,
    /// The message moved; must contain [`SEQ_FIELD`].
    pub message: Vec<u8>,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub message_bytes: usize,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// Received messages per second between the first send and the last receipt.
    pub per_s: f64,
    pub latency: Percentiles,
    /// CPU seconds the forwarder thread used per 1000 messages forwarded.
    pub cpu_s_per_1000: f64,
}

/// A NOTIFY of realistic size carrying [`SEQ_FIELD`] in its PIDF note.
pub fn sample_notify() -> Vec<u8> {
    let body = crate::pidf::build("pres:u1@xmpp.test", "ID-r", true, SEQ_FIELD);
    crate::sipmsg::build(
        "NOTIFY sip:w1@127.0.0.1:5090 SIP/2.0",
        &[
            (
                "Via",
                "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-baseline-0001;rport",
            ),
            ("Max-Forwards", "70"),
            ("From", "<sip:u1@xmpp.test>;tag=gw-0001"),
            ("To", "<sip:w1@sip.test>;tag=w1t1"),
            ("Call-ID", "s2x-1-1@127.0.0.1"),
            ("CSeq", "2 NOTIFY"),
            ("Contact", "<sip:u1@127.0.0.1:5060>"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=3600"),
            ("Content-Type", "application/pidf+xml"),
        ],
        body.as_bytes(),
    )
}

fn seq_offset(message: &[u8]) -> Option<usize> {
    message
        .windows(SEQ_FIELD.len())
        .position(|w| w == SEQ_FIELD.as_bytes())
        .map(|i| i + SEQ_FIELD.len() - SEQ_DIGITS)
}

fn write_seq(message: &mut [u8], at: usize, seq: u64) {
    let digits = format!("{seq:0width$}", width = SEQ_DIGITS);
    message[at..at + SEQ_DIGITS].copy_from_slice(&digits.as_bytes()[..SEQ_DIGITS]);
}

fn read_seq(message: &[u8], at: usize) -> Option<u64> {
    std::str::from_utf8(message.get(at..at + SEQ_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// Runs the forwarder once. Every loop is bounded by `duration`, `max_messages` and
/// `drain`.
pub fn run(cfg: &Config) -> std::io::Result<Report> {
    let offset = seq_offset(&cfg.message).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "message lacks SEQ_FIELD")
    })?;
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    // The same buffers as the tool's own sockets, so the comparison is fair.
    let sender = crate::sock::bind_udp(loopback)?;
    let forwarder = crate::sock::bind_udp(loopback)?;
    let receiver = crate::sock::bind_udp(loopback)?;
    let fwd_addr = forwarder.local_addr()?;
    let rcv_addr = receiver.local_addr()?;
    forwarder.set_read_timeout(Some(Duration::from_millis(50)))?;
    receiver.set_read_timeout(Some(Duration::from_millis(50)))?;

    let cap = cfg.max_messages as usize;
    let send_ns: Arc<Vec<AtomicU64>> = Arc::new((0..cap).map(|_| AtomicU64::new(0)).collect());
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    let fwd_stop = stop.clone();
    let fwd = std::thread::spawn(move || {
        let cpu0 = procfs::thread_cpu_seconds().unwrap_or(0.0);
        let mut buf = vec![0u8; 65536];
        let mut forwarded = 0u64;
        while !fwd_stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = forwarder.recv_from(&mut buf) {
                if forwarder.send_to(&buf[..n], rcv_addr).is_ok() {
                    forwarded += 1;
                }
            }
        }
        let cpu = procfs::thread_cpu_seconds().unwrap_or(0.0) - cpu0;
        (forwarded, cpu)
    });

    let (rcv_times, rcv_received, rcv_stop) = (send_ns.clone(), received.clone(), stop.clone());
    let rcv = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut lat_us = Vec::new();
        let mut last = t0;
        while !rcv_stop.load(Ordering::Relaxed) {
            if let Ok(n) = receiver.recv(&mut buf) {
                let now = Instant::now();
                if let Some(seq) = read_seq(&buf[..n], offset) {
                    if let Some(t) = rcv_times.get(seq as usize) {
                        let sent = t.load(Ordering::Acquire);
                        let now_ns = now.duration_since(t0).as_nanos() as u64;
                        lat_us.push(now_ns.saturating_sub(sent) / 1000);
                        rcv_received.fetch_add(1, Ordering::Release);
                        last = now;
                    }
                }
            }
        }
        (lat_us, last)
    });

    let mut msg = cfg.message.clone();
    let mut sent = 0u64;
    let end = t0 + cfg.duration;
    while sent < cfg.max_messages {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match cfg.pace {
            Pace::Rate(r) => {
                let due = t0 + Duration::from_secs_f64(sent as f64 / r.max(1e-6));
                if due > now {
                    let ahead = due - now;
                    if ahead > Duration::from_millis(1) {
                        std::thread::sleep(ahead - Duration::from_micros(500));
                    } else {
                        std::thread::yield_now();
                    }
                    continue;
                }
            }
            Pace::Max { window } => {
                if sent.saturating_sub(received.load(Ordering::Acquire)) >= window as u64 {
                    std::thread::yield_now();
                    continue;
                }
            }
        }
        write_seq(&mut msg, offset, sent);
        send_ns[sent as usize].store(
            Instant::now().duration_since(t0).as_nanos() as u64,
            Ordering::Release,
        );
        if sender.send_to(&msg, fwd_addr).is_ok() {
            sent += 1;
        }
    }
    let drain_end = Instant::now() + cfg.drain;
    while received.load(Ordering::Acquire) < sent && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let (forwarded, cpu) = fwd.join().unwrap_or((0, 0.0));
    let (lat_us, last) = rcv.join().unwrap_or((Vec::new(), t0));
    let got = lat_us.len() as u64;
    let span = last.saturating_duration_since(t0).as_secs_f64();
    Ok(Report {
        message_bytes: cfg.message.len(),
        sent,
        received: got,
        lost: sent.saturating_sub(got),
        per_s: if span > 0.0 { got as f64 / span } else { 0.0 },
        latency: percentiles(&lat_us),
        cpu_s_per_1000: if forwarded > 0 {
            cpu * 1000.0 / forwarded as f64
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_field_round_trips_in_the_sample_notify() {
        let mut m = sample_notify();
        let at = seq_offset(&m).expect("placeholder present");
        write_seq(&mut m, at, 1234567);
        assert_eq!(read_seq(&m, at), Some(1234567));
        let parsed = crate::sipmsg::Msg::parse(&m).expect("still valid SIP");
        let note = crate::pidf::read(&parsed.body).expect("still valid PIDF");
        assert_eq!(note.seq(), Some(1234567));
    }

    #[test]
    fn closed_loop_forwarder_moves_every_message() {
        let cfg = Config {
            pace: Pace::Max { window: 8 },
            duration: Duration::from_secs(5),
            max_messages: 500,
            message: sample_notify(),
            drain: Duration::from_secs(2),
        };
        let r = run(&cfg).expect("runs");
        assert_eq!((r.sent, r.received, r.lost), (500, 500, 0));
        assert_eq!(r.latency.count, 500);
        assert!(r.per_s > 0.0);
    }

    #[test]
    fn message_without_placeholder_is_refused() {
        let cfg = Config {
            pace: Pace::Rate(10.0),
            duration: Duration::from_millis(10),
            max_messages: 1,
            message: b"NOTIFY x SIP/2.0\r\n\r\n".to_vec(),
            drain: Duration::ZERO,
        };
        assert!(run(&cfg).is_err());
    }
}
