//! Resource figures of a process (or of the calling thread) from Linux `/proc`.

use std::sync::OnceLock;

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime in seconds from the text of a `stat` file (proc(5): fields 14 and 15;
/// the command name in field 2 may contain spaces and parentheses, so count from the
/// last `)`).
pub fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_seconds_from_stat(&stat)
}

/// CPU seconds the *calling thread* has used so far.
pub fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    cpu_seconds_from_stat(&stat)
}

/// A `kB` field of a `status` file (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS")
}

/// Peak resident set size of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmHWM")
}

/// The parent PID of a process (`/proc/PID/stat` field 4).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and every live descendant (a forking server such as Kamailio runs its
/// workers as children). Bounded: at most 4096 processes.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten().take(1 << 16) {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some(pp) = parent_of(p) {
                    all.push((p, pp));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 4096 {
        let parent = out[i];
        for (p, pp) in &all {
            if *pp == parent && !out.contains(p) {
                out.push(*p);
            }
        }
        i += 1;
    }
    out
}

/// CPU seconds (user + system) of `pid` and its live descendants.
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let own = cpu_seconds(pid)?;
    let rest: f64 = tree(pid).into_iter().skip(1).filter_map(cpu_seconds).sum();
    Some(own + rest)
}

/// Proportional set size (`Pss` of `/proc/PID/smaps_rollup`) of `pid` and its live
/// descendants, in KiB: shared memory (Kamailio's shm) is counted once across them.
pub fn tree_pss_kib(pid: u32) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for p in tree(pid) {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            if let Some(k) = status_kib(&text, "Pss") {
                total += k;
                any = true;
            }
        }
    }
    any.then_some(total)
}

/// Datagrams the kernel dropped on receive (a full socket buffer) for the UDP sockets
/// bound to local `port`, summed from the `drops` column (the 13th) of the text of
/// `/proc/net/udp` or `/proc/net/udp6`.
pub fn udp_drops_from_table(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local == port).then(|| f.get(12)?.parse::<u64>().ok())?
        })
        .sum()
}

/// Receive drops of the UDP sockets on this host bound to local `port` (IPv4 and IPv6),
/// or `None` when `/proc/net/udp` cannot be read. Counts since each socket was opened.
pub fn udp_drops(port: u16) -> Option<u64> {
    let v4 = std::fs::read_to_string("/proc/net/udp").ok()?;
    let v6 = std::fs::read_to_string("/proc/net/udp6").unwrap_or_default();
    Some(udp_drops_from_table(&v4, port) + udp_drops_from_table(&v6, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_a_command_name_with_spaces() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        let secs = cpu_seconds_from_stat(stat).expect("parses");
        assert!((secs - 300.0 / clock_ticks()).abs() < 1e-9);
    }

    #[test]
    fn status_field_is_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_has_rss_and_cpu() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|k| k > 0));
        assert!(cpu_seconds(pid).is_some());
        assert!(thread_cpu_seconds().is_some());
    }

    #[test]
    fn own_process_tree_has_pss_and_cpu() {
        let pid = std::process::id();
        assert_eq!(tree(pid).first(), Some(&pid));
        assert!(tree_pss_kib(pid).is_some_and(|k| k > 0));
        assert!(tree_cpu_seconds(pid).is_some());
    }

    #[test]
    fn udp_drops_are_summed_for_the_local_port() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
   1: 0100007F:C14C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 45420\n\
   2: 0100007F:B326 00000000:0000 07 00000000:0001B900 00:00000000 00000000     0        0 3 2 0000000000000000 0\n\
   3: 00000000:C14C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0000000000000000 5\n";
        assert_eq!(udp_drops_from_table(table, 0xC14C), 45425);
        assert_eq!(udp_drops_from_table(table, 0xB326), 0);
        assert_eq!(udp_drops_from_table(table, 1), 0);
    }
}
