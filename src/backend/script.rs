//! A rendered script held as the text around its big values (each device's batch and
//! filters, the line map), and those values as [`Chunks`]: text in parts of 64 KiB. The
//! apply script of 100,000 classes (47 MB of values) is not copied into the template
//! engine nor into one string, and its parts fit in the room the freed model leaves on the
//! heap instead of growing the process by one allocation of tens of megabytes each.

use std::fmt;

/// About how many bytes a part of [`Chunks`] holds (a line is never split).
const CHUNK: usize = 1 << 16;

/// Text written line by line into parts of about [`CHUNK`] bytes, each ending where a line
/// ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Chunks(Vec<String>);

impl Chunks {
    /// Starts a line: a new part once the last is full. Where the line starts in
    /// [`Chunks::last`], which it is written into.
    pub(crate) fn line_start(&mut self) -> usize {
        if self.0.last().is_none_or(|p| p.len() >= CHUNK) {
            self.0.push(String::with_capacity(CHUNK + 1024));
        }
        self.last().len()
    }

    /// The part being written.
    pub(crate) fn last(&mut self) -> &mut String {
        if self.0.is_empty() {
            self.0.push(String::new());
        }
        let n = self.0.len() - 1;
        &mut self.0[n]
    }

    /// The text as one string.
    pub(crate) fn concat(&self) -> String {
        self.0.concat()
    }

    /// The parts, in order.
    pub(crate) fn into_parts(self) -> Vec<String> {
        self.0
    }
}

impl fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.last().push_str(s);
        Ok(())
    }
}

/// A rendered script: its template's text with the big values spliced in where they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// The text around the pieces.
    text: String,
    /// Each piece (its parts, in order) with the offset in `text` it stands at, in order.
    pieces: Vec<(usize, Vec<String>)>,
}

impl Script {
    /// A script that is one text.
    #[must_use]
    pub fn whole(text: String) -> Script {
        Script {
            text,
            pieces: Vec::new(),
        }
    }

    /// The script's text in order, as consecutive parts (some may be empty).
    pub fn chunks(&self) -> impl Iterator<Item = &str> {
        let mut at = 0;
        self.pieces
            .iter()
            .flat_map(move |(offset, piece)| {
                let before = &self.text[at..*offset];
                at = *offset;
                std::iter::once(before).chain(piece.iter().map(String::as_str))
            })
            .chain(std::iter::once_with(move || {
                let last = self.pieces.last().map_or(0, |(o, _)| *o);
                &self.text[last..]
            }))
    }

    /// Its length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.chunks().map(str::len).sum()
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the script to `w`.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.chunks().try_for_each(|c| w.write_all(c.as_bytes()))
    }

    /// The script as one string.
    #[must_use]
    pub fn into_string(self) -> String {
        if self.pieces.is_empty() {
            return self.text;
        }
        let mut out = String::with_capacity(self.len());
        self.chunks().for_each(|c| out.push_str(c));
        out
    }

    /// Whether it is one text, with no pieces spliced in.
    #[cfg(test)]
    pub(crate) fn is_whole(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Takes the marks `marks[i]` out of `text`, recording piece `pieces[i]` where each
    /// stood, and ends the script with a newline; the pieces back unless each mark occurs
    /// exactly once.
    pub(crate) fn splice(
        text: &str,
        marks: &[String],
        pieces: Vec<Chunks>,
    ) -> Result<Script, Vec<Chunks>> {
        let mut at: Vec<(usize, usize)> = Vec::with_capacity(marks.len());
        for (i, m) in marks.iter().enumerate() {
            let mut found = text.match_indices(m.as_str()).map(|(o, _)| o);
            match (found.next(), found.next()) {
                (Some(o), None) => at.push((o, i)),
                _ => return Err(pieces),
            }
        }
        if marks.len() != pieces.len() {
            return Err(pieces);
        }
        at.sort_unstable();
        let mut pieces: Vec<Option<Chunks>> = pieces.into_iter().map(Some).collect();
        let mut out = Script {
            text: String::with_capacity(text.len()),
            pieces: Vec::with_capacity(marks.len()),
        };
        let mut from = 0;
        for (o, i) in at {
            // Offsets of matches: character boundaries, in order, not overlapping (every
            // mark starts and ends with a NUL and names its number).
            out.text.push_str(&text[from..o]);
            let piece = pieces[i].take().unwrap_or_default();
            out.pieces.push((out.text.len(), piece.into_parts()));
            from = o + marks[i].len();
        }
        out.text.push_str(&text[from..]);
        let ends = out.chunks().filter(|c| !c.is_empty()).last();
        if !ends.is_some_and(|c| c.ends_with('\n')) {
            out.text.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn chunks(parts: &[&str]) -> Chunks {
        Chunks(parts.iter().map(|p| (*p).to_string()).collect())
    }

    #[test]
    fn a_mark_that_is_not_there_exactly_once_gives_the_pieces_back() {
        let marks = ["<0>".to_string(), "<1>".to_string()];
        let pieces = || vec![chunks(&["a", "\n"]), chunks(&["b"])];
        let s = Script::splice("x<1>y<0>z", &marks, pieces()).unwrap();
        assert_eq!(
            s.chunks().collect::<Vec<_>>(),
            ["x", "b", "y", "a", "\n", "z\n"]
        );
        assert_eq!(s.len(), 7);
        let s = Script::splice("<1><0>", &marks, pieces()).unwrap();
        assert_eq!(s.into_string(), "ba\n");
        for text in ["x<0>y", "<0><1><1>", "", "<0><0><1>"] {
            assert_eq!(
                Script::splice(text, &marks, pieces()),
                Err(pieces()),
                "{text}"
            );
        }
        assert_eq!(
            Script::whole("t".into()).chunks().collect::<Vec<_>>(),
            ["t"]
        );
    }

    #[test]
    fn lines_go_into_parts_of_about_a_chunk_and_are_never_split() {
        let mut c = Chunks::default();
        let mut whole = String::new();
        for n in 0..20_000 {
            let start = c.line_start();
            let _ = write!(c, "line {n} {}", "x".repeat(n % 50));
            assert!(c.last()[start..].starts_with("line "));
            c.last().push('\n');
            let _ = writeln!(whole, "line {n} {}", "x".repeat(n % 50));
        }
        assert_eq!(c.concat(), whole);
        let parts = c.into_parts();
        assert!(parts.len() > 5, "{}", parts.len());
        for p in &parts {
            assert!(p.ends_with('\n') && p.len() < CHUNK + 100, "{}", p.len());
        }
    }
}
