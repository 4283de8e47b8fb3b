//! Parse-only timing: the hand-written reader (`netqos::syntax::parse`) and the pest oracle
//! (`netqos::syntax::reference::parse`) on each policy file given, best of `--reps` runs
//! (default 5). No check, no lowering: what `netqos check` spends before the checker.
//!
//! `cargo bench --locked --bench parse -- FILE...` (release profile); `--reader-only` skips
//! pest (which takes seconds on 10 MB files).

use std::hint::black_box;
use std::time::{Duration, Instant};

fn best(reps: usize, f: impl Fn() -> bool) -> (Duration, bool) {
    let mut best = Duration::MAX;
    let mut ok = false;
    for _ in 0..reps {
        let t = Instant::now();
        ok = black_box(f());
        best = best.min(t.elapsed());
    }
    (best, ok)
}

fn main() {
    let mut reps = 5;
    let mut reader_only = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|n| n.parse().ok()).unwrap_or(reps),
            "--reader-only" => reader_only = true,
            // `cargo bench` passes --bench.
            "--bench" => {}
            _ => files.push(a),
        }
    }
    for path in files {
        let Ok(src) = std::fs::read_to_string(&path) else {
            eprintln!("{path}: cannot read");
            std::process::exit(2);
        };
        let mb = src.len() as f64 / 1e6;
        let (t, ok) = best(reps, || netqos::syntax::parse(&src).is_ok());
        let ms = t.as_secs_f64() * 1e3;
        let mut line = format!(
            "{path}: {mb:.2} MB, {}: reader {ms:.2} ms ({:.0} MB/s)",
            if ok { "parses" } else { "NQ040" },
            mb / t.as_secs_f64()
        );
        if !reader_only {
            let (p, _) = best(reps.min(3), || {
                netqos::syntax::reference::parse(&src).is_ok()
            });
            let pms = p.as_secs_f64() * 1e3;
            line.push_str(&format!(", pest {pms:.2} ms ({:.1}x)", pms / ms));
        }
        println!("{line}");
    }
}
