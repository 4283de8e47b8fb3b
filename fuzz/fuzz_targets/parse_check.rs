//! libFuzzer target: any bytes through parse, check, diagnostics rendering and fmt.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_check -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netqos::report::{Source, human, json_values};
use netqos::vars::ExternalVars;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = netqos::check_source(text, &ExternalVars::default());
    let diags = checked.diagnostics.into_sorted();
    let src = Source {
        name: "fuzz.nq".into(),
        text: text.into(),
    };
    let _ = human(&diags, &src, false);
    let _ = json_values(&diags, &src);
    if let Ok(formatted) = netqos::format::format(text) {
        let again = netqos::format::format(&formatted).expect("formatted output formats");
        assert_eq!(again, formatted, "fmt is idempotent");
    }
});
