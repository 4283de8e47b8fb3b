//! `netqos fmt FILE…`: canonical layout in place, or `--check` for CI.

use std::path::{Path, PathBuf};

use super::check::read_source;
use super::{Exit, Ui, write_atomic};
use netqos::report;

/// A unified diff (3 lines of context) from `name` as it is to its formatted text.
fn unified(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(name, &format!("{name} (formatted)"))
        .to_string()
}

pub fn run(files: &[PathBuf], check: bool, diff: bool, ui: Ui) -> Exit {
    let mut exit = Exit::Ok;
    for path in files {
        let src = match read_source(path) {
            Ok(s) => s,
            Err(e) => {
                exit = exit.max(e.report(ui));
                continue;
            }
        };
        let formatted = match netqos::format::format(&src.text) {
            Ok(f) => f,
            Err(diags) => {
                eprint!("{}", report::human(&diags, &src, ui.color));
                eprintln!(
                    "netqos: {} was not formatted: fix the errors above first",
                    src.name
                );
                exit = exit.max(Exit::Invalid);
                continue;
            }
        };
        if path == Path::new("-") {
            if check {
                if formatted != src.text {
                    if diff {
                        out!("{}", unified("<stdin>", &src.text, &formatted));
                    } else {
                        outln!("<stdin>");
                    }
                    exit = exit.max(Exit::Invalid);
                }
            } else {
                out!("{formatted}");
            }
            continue;
        }
        if formatted == src.text {
            if ui.verbose {
                eprintln!("{}: already formatted", src.name);
            }
            continue;
        }
        if check {
            if diff {
                out!("{}", unified(&src.name, &src.text, &formatted));
            } else {
                outln!("{}", src.name);
            }
            exit = exit.max(Exit::Invalid);
            continue;
        }
        match write_atomic(path, formatted.as_bytes()) {
            Ok(()) => {
                if !ui.quiet {
                    eprintln!("formatted {}", src.name);
                }
            }
            Err(e) => {
                eprintln!("netqos: cannot write {}: {e}", path.display());
                exit = exit.max(Exit::Io);
            }
        }
    }
    exit
}
