//! Reading policy and vars files, bounded: only regular files (or `-`, standard input), at
//! most `netqos::input::MAX_INPUT_BYTES`, never blocking on a FIFO or reading a device; the
//! text decoded as UTF-8 with a diagnostic at the first bad byte. Failures are typed so each
//! command maps them to its exit status.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::{Exit, Ui};
use netqos::diagnostic::Diagnostic;
use netqos::input::{MAX_INPUT_BYTES, decode, not_a_file, too_large};
use netqos::report::Source;

/// Why an input could not be read.
#[derive(Debug)]
pub enum Unreadable {
    /// The file system said no (missing, permission): exit 3.
    Io(String),
    /// The input itself is unusable (NQ080–NQ082): a diagnostic, shown against `Source`;
    /// exit 1.
    Invalid(Box<(Source, Diagnostic)>),
}

impl Unreadable {
    /// Prints the failure and returns its exit status (3 or 1).
    pub fn report(self, ui: Ui) -> Exit {
        match self {
            Unreadable::Io(message) => {
                eprintln!("netqos: {message}");
                Exit::Io
            }
            Unreadable::Invalid(b) => {
                let (src, d) = *b;
                eprint!("{}", netqos::report::human(&[d], &src, ui.color));
                Exit::Invalid
            }
        }
    }
}

/// Reads a policy (`-` is standard input).
pub fn read_policy(path: &Path) -> Result<Source, Unreadable> {
    let name = path.display().to_string();
    let bytes = read_bytes(path, "policy")?;
    match decode(bytes) {
        Ok(text) => Ok(Source { name, text }),
        Err((text, d)) => Err(Unreadable::Invalid(Box::new((Source { name, text }, d)))),
    }
}

/// Reads a vars (TOML) file; a bad byte is reported by line and column in the message.
pub fn read_vars(path: &Path) -> Result<String, Unreadable> {
    read_text(path, "vars file")
}

/// Reads a file other than the policy (`what`: "vars file", "conflist") with the same
/// bounds; a bad byte is reported by line and column in the message.
pub fn read_text(path: &Path, what: &str) -> Result<String, Unreadable> {
    let bytes = read_bytes(path, what)?;
    decode(bytes).map_err(|(_, mut d)| {
        d.labels.clear();
        d.message = format!("{what} {}: {}", path.display(), d.message);
        Unreadable::Invalid(Box::new((command_line(), d)))
    })
}

/// The source diagnostics about an input as a whole are shown against.
fn command_line() -> Source {
    Source {
        name: "<command line>".into(),
        text: String::new(),
    }
}

/// The bytes of `path`, bounded; `what` names the input in diagnostics.
fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, Unreadable> {
    let name = path.display().to_string();
    let invalid = |d| Unreadable::Invalid(Box::new((command_line(), d)));
    if path == Path::new("-") {
        return read_bounded(std::io::stdin().lock(), 0, what, "standard input");
    }
    let io = |e: std::io::Error| Unreadable::Io(format!("cannot read {what} {name}: {e}"));
    // `stat` first: it neither opens a FIFO (which would wait for a writer) nor a device.
    let meta = std::fs::metadata(path).map_err(io)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(invalid(not_a_file(what, &name, kind)));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(invalid(too_large(what, &name, Some(meta.len()))));
    }
    // Non-blocking, and checked again on the open file, in case the path changed between.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(invalid(not_a_file(what, &name, kind)));
    }
    read_bounded(file, meta.len(), what, &name)
}

/// Reads at most one byte more than the limit, so a larger input is NQ081. `expected` is
/// the size `stat` gave (0 when unknown): room for it and the one byte that shows the end,
/// so a 12 MB policy is held in 12 MB, not in the doubled vector reading would grow.
fn read_bounded(
    r: impl Read,
    expected: u64,
    what: &str,
    name: &str,
) -> Result<Vec<u8>, Unreadable> {
    let room = usize::try_from(expected.min(MAX_INPUT_BYTES)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(room.saturating_add(1));
    r.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Unreadable::Io(format!("cannot read {what} {name}: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(Unreadable::Invalid(Box::new((
            command_line(),
            too_large(what, name, None),
        ))));
    }
    Ok(bytes)
}

/// What a non-regular file is, for the diagnostic.
fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}
