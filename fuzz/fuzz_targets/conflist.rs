//! libFuzzer target: any bytes as a node's CNI conflist through the analyser (patch,
//! reverse, patched text) and the conflist artefacts of a policy's `pods` block, with the
//! invariants of `fuzz/src/invariants.rs`. The first byte picks whether the policy sets pod
//! limits and whether the artefacts are computed. Build and run: `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netqos_fuzz::invariants;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let pods = invariants::pods(mode);
    if let Err(why) = invariants::conflist(text, mode & 1 == 1, pods) {
        panic!("{why}");
    }
});
