//! `netqos fmt FILE…`: canonical layout in place, or `--check` for CI.

use std::path::{Path, PathBuf};

use super::check::read_source;
use super::error::{Error, report};
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

pub fn run(files: &[PathBuf], check: bool, diff: bool, ui: Ui) -> Result<Exit, Error> {
    let mut exit = Exit::Ok;
    for path in files {
        let status = one(path, check, diff, ui).unwrap_or_else(|e| report(e, ui));
        exit = exit.max(status);
    }
    Ok(exit)
}

/// Formats one file (or checks that it is formatted, printing its name or with `--diff`
/// the change): `Invalid` when `--check` finds it is not.
fn one(path: &Path, check: bool, diff: bool, ui: Ui) -> Result<Exit, Error> {
    let src = read_source(path)?;
    let formatted = netqos::format::format(&src.text).map_err(|diags| {
        eprint!("{}", report::human(&diags, &src, ui.color));
        Error::NotFormatted {
            name: src.name.clone(),
        }
    })?;
    let changed = formatted != src.text;
    if path == Path::new("-") {
        if !check {
            out!("{formatted}");
        } else if changed {
            unformatted("<stdin>", &src.text, &formatted, diff);
            return Ok(Exit::Invalid);
        }
        return Ok(Exit::Ok);
    }
    if !changed {
        if ui.verbose {
            eprintln!("{}: already formatted", src.name);
        }
        return Ok(Exit::Ok);
    }
    if check {
        unformatted(&src.name, &src.text, &formatted, diff);
        return Ok(Exit::Invalid);
    }
    write_atomic(path, formatted.as_bytes()).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })?;
    if !ui.quiet {
        eprintln!("formatted {}", src.name);
    }
    Ok(Exit::Ok)
}

/// What `--check` prints for a file that is not formatted: its name, or the diff.
fn unformatted(name: &str, old: &str, new: &str, diff: bool) {
    if diff {
        out!("{}", unified(name, old, new));
    } else {
        outln!("{name}");
    }
}
