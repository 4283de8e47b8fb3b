//! The `cloud-init` artefact: a complete `#cloud-config` document that writes the node's
//! files (`write_files`) and enables the systemd unit that applies the policy (`runcmd`).
//!
//! It takes a list of files, so other artefacts (a patched CNI conflist) can be added
//! without touching the layout. File contents are YAML literal blocks, readable in review;
//! a content a literal block cannot carry exactly (characters YAML does not allow, a first
//! line starting with a space, no or several final newlines) is written base64-encoded.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::systemd::UNIT_NAME;

/// A file cloud-init writes on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Absolute path on the node.
    pub path: String,
    /// Octal permissions, e.g. `0755`.
    pub mode: u32,
    pub content: String,
}

/// A YAML double-quoted scalar holding `text` exactly.
pub fn yaml_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if yaml_printable(c) && !matches!(c, '\t' | '\n') && !is_yaml_break(c) => out.push(c),
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// Characters YAML allows in a document (the printable set of YAML 1.1 and 1.2).
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

/// Characters YAML 1.1 reads as line breaks besides `\n`.
fn is_yaml_break(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\r')
}

/// Whether a literal block (`|`, clip chomping) reads back as exactly `content`.
#[cfg(test)]
fn literal_fits(content: &str) -> bool {
    literal_fits_chunks(&[content])
}

/// [`literal_fits`] for the text that is `chunks` one after the other.
fn literal_fits_chunks(chunks: &[&str]) -> bool {
    let mut parts = chunks.iter().filter(|c| !c.is_empty());
    let Some(first) = parts.clone().next() else {
        return false;
    };
    let mut last_two = parts.clone().rev().take(2);
    let (last, before) = (last_two.next().unwrap_or(first), last_two.next());
    let ends_twice =
        last.ends_with("\n\n") || (*last == "\n" && before.is_some_and(|b| b.ends_with('\n')));
    last.ends_with('\n')
        && !ends_twice
        && !first.starts_with([' ', '\t', '\n'])
        && parts.all(|c| literal_chars(c))
}

/// Whether every character may stand in a literal block: plain ASCII is skipped byte by
/// byte, the rest is judged character by character.
fn literal_chars(content: &str) -> bool {
    let mut rest = content;
    while let Some(i) = rest
        .bytes()
        .position(|b| !matches!(b, b'\t' | b'\n' | b' '..=b'~'))
    {
        let Some(c) = rest[i..].chars().next() else {
            return true;
        };
        if !yaml_printable(c) || is_yaml_break(c) {
            return false;
        }
        rest = &rest[i + c.len_utf8()..];
    }
    true
}

/// Text safe inside a YAML comment: anything YAML would not allow or would read as a line
/// break becomes `?`.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if yaml_printable(c) && !is_yaml_break(c) && c != '\n' && c != '\t' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Standard base64 with padding, wrapped at 76 columns.
fn base64(data: &[u8]) -> Vec<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text.as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// Renders the `#cloud-config` document for the policy named `source`. Written directly,
/// not through a template: the contents are the node's whole scripts, millions of lines
/// for a big policy.
pub fn cloud_config(files: &[NodeFile], source: &str) -> Result<String, minijinja::Error> {
    let parts: Vec<FileRef<'_>> = files.iter().map(NodeFile::as_ref).collect();
    let size: usize = files.iter().map(|f| f.content.len() * 2 + 128).sum();
    let mut out = Vec::with_capacity(size + 512);
    write_cloud_config(&parts, source, &mut out)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))?;
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A node file whose content is borrowed (the scripts are rendered once and written both
/// as files and inside the `#cloud-config`).
#[derive(Debug, Clone)]
pub(crate) struct FileRef<'a> {
    pub path: &'a str,
    pub mode: u32,
    /// The content: these parts one after the other.
    pub content: Vec<&'a str>,
}

impl NodeFile {
    fn as_ref(&self) -> FileRef<'_> {
        FileRef {
            path: &self.path,
            mode: self.mode,
            content: vec![&self.content],
        }
    }
}

/// [`cloud_config`] written to `w` as it is made, holding no copy of the contents.
pub(crate) fn write_cloud_config(
    files: &[FileRef<'_>],
    source: &str,
    w: &mut dyn Write,
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(1 << 16, w);
    write!(
        w,
        "#cloud-config\n# Generated by netqos from {}. Do not edit: change the policy and re-run\n\
         # `netqos compile`. Writes the node's netqos files and enables {UNIT_NAME}, which applies\n\
         # the policy now and at every boot (tc state does not survive a reboot).\nwrite_files:\n",
        comment_text(source)
    )?;
    for f in files {
        write!(
            w,
            "  - path: {}\n    owner: \"root:root\"\n    permissions: {}\n",
            yaml_quote(f.path),
            yaml_quote(&format!("{:04o}", f.mode))
        )?;
        if literal_fits_chunks(&f.content) {
            w.write_all(b"    content: |\n")?;
            // Every line ends with a newline (`literal_fits`); empty lines stay empty. A
            // line may run on from one part into the next: only its start is indented.
            let mut line_start = true;
            for l in f.content.iter().flat_map(|c| c.split_inclusive('\n')) {
                if line_start && l != "\n" {
                    w.write_all(b"      ")?;
                }
                w.write_all(l.as_bytes())?;
                line_start = l.ends_with('\n');
            }
        } else {
            w.write_all(b"    encoding: b64\n    content: |\n")?;
            for l in base64(f.content.concat().as_bytes()) {
                w.write_all(b"      ")?;
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")?;
            }
        }
    }
    write!(
        w,
        "runcmd:\n  - [systemctl, daemon-reload]\n  - [systemctl, enable, --now, {UNIT_NAME}]\n"
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), Vec::<String>::new());
        assert_eq!(base64(b"f"), ["Zg=="]);
        assert_eq!(base64(b"fo"), ["Zm8="]);
        assert_eq!(base64(b"foo"), ["Zm9v"]);
        assert_eq!(base64(b"foobar"), ["Zm9vYmFy"]);
    }

    #[test]
    fn a_content_in_parts_is_written_as_the_whole_one() {
        let contents = [
            "#!/bin/sh\necho hi\n\n# end\n",
            "a\n\n",
            " lead\n",
            "no newline",
            "x\n",
            "\n",
            "bad\rchar\n",
            "",
        ];
        let write = |parts: Vec<&str>| {
            let file = FileRef {
                path: "/p",
                mode: 0o644,
                content: parts,
            };
            let mut out = Vec::new();
            write_cloud_config(&[file], "s.nq", &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        for c in contents {
            let whole = write(vec![c]);
            for i in 0..=c.len() {
                for j in i..=c.len() {
                    let parts = vec!["", &c[..i], &c[i..j], "", &c[j..]];
                    assert_eq!(write(parts), whole, "{c:?} split at {i}, {j}");
                }
            }
        }
    }

    #[test]
    fn literal_blocks_only_when_exact() {
        assert!(literal_fits("#!/bin/sh\necho hi\n\n# end\n"));
        assert!(!literal_fits("no newline"));
        assert!(!literal_fits("two newlines\n\n"));
        assert!(!literal_fits("  indented first line\n"));
        assert!(!literal_fits("a\rb\n"));
        assert!(!literal_fits("a\u{2028}b\n"));
        assert!(!literal_fits("a\u{1b}b\n"));
    }

    #[test]
    fn quoting() {
        assert_eq!(yaml_quote("/a b/\"c\""), "\"/a b/\\\"c\\\"\"");
        assert_eq!(yaml_quote("a\nb"), "\"a\\U0000000ab\"");
    }
}
