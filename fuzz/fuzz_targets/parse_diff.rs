//! libFuzzer target: any bytes as a policy through the hand-written reader and the pest
//! oracle (`netqos::syntax::reference`); they must give the same tree and spans or the same
//! NQ040 (`invariants::parse_diff`). Build and run: `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netqos_fuzz::invariants;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(why) = invariants::parse_diff(text) {
        panic!("{why}");
    }
});
