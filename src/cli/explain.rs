//! `netqos explain NQ###`: the long explanation of a diagnostic code.

use super::Exit;
use netqos::codes::Code;

pub fn run(code: Option<&str>) -> Exit {
    let Some(text) = code else {
        for c in Code::ALL {
            outln!("{c}  {:<8} {}", c.severity().as_str(), c.title());
        }
        return Exit::Ok;
    };
    match Code::parse(text) {
        Some(c) => {
            out!("{}", c.explanation());
            Exit::Ok
        }
        None => {
            eprintln!(
                "netqos: `{text}` is not a netqos diagnostic code; `netqos explain` lists them"
            );
            Exit::Usage
        }
    }
}
