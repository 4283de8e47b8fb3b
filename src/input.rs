//! Policy and vars input before parsing: the size limit every input file is held to, and
//! bytes → text, where a byte that is not UTF-8 is a diagnostic at that byte (NQ080), not
//! an I/O error. Reading the files themselves is the CLI's job (`cli/input.rs`).

use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::span::{Span, line_col};

/// The largest policy or vars file netqos reads: 16 MiB. A node policy is a few kilobytes;
/// a generated one with 10,000 classes about 600 KB.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Decodes a policy: the text, or NQ080 at the first byte that is not UTF-8 together with
/// the text to show it in (that byte and any later invalid ones replaced by U+FFFD, so the
/// diagnostic's span covers the replacement character at the same offset).
pub fn decode(bytes: Vec<u8>) -> Result<String, (String, Diagnostic)> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let bad: Vec<String> = bytes[at..]
                .iter()
                .take(e_len(&bytes[at..]))
                .map(|b| format!("0x{b:02x}"))
                .collect();
            let shown = String::from_utf8_lossy(&bytes).into_owned();
            let (line, col) = line_col(&shown, at);
            let width = shown[at..].chars().next().map_or(0, char::len_utf8);
            let d = Diagnostic::new(
                Code::NQ080,
                format!(
                    "byte {} at line {line}, column {col} is not UTF-8 text",
                    bad.join(" ")
                ),
            )
            .label(Span::new(at, at + width), "not UTF-8")
            .help(
                "save the policy as UTF-8 (from Latin-1: `iconv -f latin1 -t utf-8 FILE`); \
                 netqos policies are UTF-8 text",
            );
            Err((shown, d))
        }
    }
}

/// How many bytes at the start of `rest` form the invalid sequence (1 to 3).
fn e_len(rest: &[u8]) -> usize {
    match std::str::from_utf8(rest) {
        Ok(_) => 0,
        Err(e) => e.error_len().unwrap_or(rest.len()).max(1),
    }
}

/// NQ081: an input larger than [`MAX_INPUT_BYTES`]; `size` is `None` for a stream, read
/// only up to the limit.
pub fn too_large(what: &str, name: &str, size: Option<u64>) -> Diagnostic {
    let limit = format!("netqos's limit of 16 MiB ({MAX_INPUT_BYTES} bytes)");
    let message = match size {
        Some(n) => format!("{what} {name} is {n} bytes, over {limit}"),
        None => format!("{what} on {name} is over {limit}"),
    };
    Diagnostic::new(Code::NQ081, message).help(format!(
        "a node policy is a few kilobytes: check that {name} is the file you meant; split a \
         generated policy per node"
    ))
}

/// NQ082: an input path that is not a regular file (a FIFO, a device, a directory).
pub fn not_a_file(what: &str, name: &str, kind: &str) -> Diagnostic {
    Diagnostic::new(
        Code::NQ082,
        format!("{what} {name} is {kind}, not a regular file"),
    )
    .help(format!(
        "give the path of a {what}; to check what a program prints, pipe it in and name the \
         file `-` (standard input, read up to the same limit)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stray_byte_is_reported_where_it_is() {
        let (shown, d) = decode(b"netqos 1\nlet x = \"a\xffb\"\n".to_vec()).unwrap_err();
        assert_eq!(d.code, Code::NQ080);
        assert!(
            d.message.contains("0xff at line 2, column 11"),
            "{}",
            d.message
        );
        let span = d.primary_span().unwrap();
        assert_eq!(&shown[span.start..span.end], "\u{fffd}");
        assert_eq!(span.start, 19);
    }

    #[test]
    fn a_truncated_sequence_names_its_bytes() {
        let (_, d) = decode(b"a\xe2\x82".to_vec()).unwrap_err();
        assert!(d.message.contains("0xe2 0x82"), "{}", d.message);
        assert_eq!(decode(b"ok\n".to_vec()).unwrap(), "ok\n");
    }
}
