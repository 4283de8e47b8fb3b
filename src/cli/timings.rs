//! Phase timings on stderr when `NETQOS_TIMINGS` is set: for `netqos apply` how long the
//! check, the read, the sending and the verification took (for `benches/apply_10k.sh`); for
//! `netqos compile` the read, parse, check and lowering, each file's rendering (two files
//! render at once) and the rendering and writing together (for `benches/scale.sh`).

use std::time::Instant;

pub struct Timings {
    on: bool,
    last: Instant,
    last_cpu: (u64, u64),
}

/// User and system CPU time of this process so far, in clock ticks (from /proc).
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    match f[..] {
        [u, s] => (u, s),
        _ => (0, 0),
    }
}

/// Resident and peak resident memory of this process, in KiB (from /proc).
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Timings {
    pub fn from_env() -> Timings {
        Timings {
            on: std::env::var_os("NETQOS_TIMINGS").is_some_and(|v| !v.is_empty()),
            last: Instant::now(),
            last_cpu: cpu_ticks(),
        }
    }

    /// Prints the time since the previous mark as `netqos: timing PHASE MS (user U ticks,
    /// system S ticks; rss R MB, peak P MB)` (CPU time in clock ticks, usually 10 ms; the
    /// resident memory now and at its highest so far).
    pub fn mark(&mut self, phase: &str) {
        if self.on {
            let now = Instant::now();
            let cpu = cpu_ticks();
            let (rss, peak) = memory_kb();
            eprintln!(
                "netqos: timing {phase} {:.1} ms (user {} ticks, system {} ticks; rss {} MB, peak {} MB)",
                (now - self.last).as_secs_f64() * 1000.0,
                cpu.0 - self.last_cpu.0,
                cpu.1 - self.last_cpu.1,
                rss / 1024,
                peak / 1024
            );
            self.last = now;
            self.last_cpu = cpu;
        }
    }

    /// Prints how long one file took to render (on whichever rendering thread), after the
    /// files are in place: `netqos: timing render FILE MS`. The mark that follows covers
    /// the rendering and the writing as a whole.
    pub fn rendered(&mut self, file: &str, took: std::time::Duration) {
        if self.on {
            eprintln!(
                "netqos: timing render {file} {:.1} ms",
                took.as_secs_f64() * 1000.0
            );
        }
    }
}
