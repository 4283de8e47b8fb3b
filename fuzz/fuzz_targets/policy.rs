//! libFuzzer target: any bytes as a policy through parse, check, lower, every artefact, the
//! netlink target and fmt, with the invariants of `fuzz/src/invariants.rs` (spans within the
//! input, deterministic output, check-clean input compiles, fmt idempotent). Diagnostics are
//! checked by code and span, never rendered. Build and run: `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netqos_fuzz::invariants;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(why) = invariants::policy(text) {
        panic!("{why}");
    }
});
