//! `netqos fmt FILE…`: canonical layout in place, or `--check` for CI.

use std::path::{Path, PathBuf};

use super::check::read_source;
use super::error::{Error, report};
use super::{Exit, Ui, write_atomic};
use netqos::report;

pub fn run(files: &[PathBuf], check: bool, ui: Ui) -> Result<Exit, Error> {
    let mut exit = Exit::Ok;
    for path in files {
        let status = one(path, check, ui).unwrap_or_else(|e| report(e, ui));
        exit = exit.max(status);
    }
    Ok(exit)
}

/// Formats one file (or checks that it is formatted): `Invalid` when `--check` finds it
/// is not.
fn one(path: &Path, check: bool, ui: Ui) -> Result<Exit, Error> {
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
            outln!("<stdin>");
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
        outln!("{}", src.name);
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
