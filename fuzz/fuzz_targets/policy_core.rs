//! libFuzzer target: the `policy` target's checks (`fuzz/src/invariants.rs`) with only the
//! artefacts that need no template engine rendered (plan, tree, svg, conflist,
//! annotations), so parse, check, lower and fmt get the executions. Build and run:
//! `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netqos_fuzz::invariants;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(why) = invariants::policy_core(text) {
        panic!("{why}");
    }
});
