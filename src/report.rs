//! Rendering diagnostics: human (miette), JSON (one object per diagnostic) and GitHub
//! workflow-command annotations for PR review.

use std::fmt::Write as _;

use std::fmt;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

use crate::diagnostic::{Diagnostic, Severity};
use crate::span::line_col;

/// A policy's source text with its display name.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

struct Adapter<'a> {
    d: &'a Diagnostic,
    src: &'a Snippets<'a>,
}

/// The policy text as miette reads it, but from near the span: miette's own `str` source
/// counts lines from the start of the text for every snippet, a scan of the whole file
/// per diagnostic (megabytes for a big policy). Here the line breaks are found once and
/// miette reads from a line a few lines above the span, with the lines before it added
/// back: the same contents, line and column as reading the whole text.
struct Snippets<'a> {
    name: &'a str,
    text: &'a str,
    /// The offset just after each line break as miette counts them (`\n`, `\r\n`, a lone
    /// `\r`), in order.
    breaks: Vec<usize>,
}

impl<'a> Snippets<'a> {
    fn new(name: &'a str, text: &'a str) -> Snippets<'a> {
        let bytes = text.as_bytes();
        let mut breaks = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => breaks.push(i + 1),
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    i += 1;
                    breaks.push(i + 1);
                }
                b'\r' => breaks.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        Snippets { name, text, breaks }
    }
}

impl SourceCode for Snippets<'_> {
    fn read_span<'b>(
        &'b self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'b> + 'b>, MietteError> {
        // Lines wholly before the span's line, then a start two lines above what miette
        // keeps as context (the start of a line, so its counting begins as from 0).
        let above = self.breaks.partition_point(|&b| b <= span.offset());
        let skipped = above.saturating_sub(context_lines_before + 2);
        let from = match skipped {
            0 => 0,
            k => self.breaks[k - 1],
        };
        let local = SourceSpan::new((span.offset() - from).into(), span.len());
        let rest = &self.text[from..];
        let inner = rest.read_span(&local, context_lines_before, context_lines_after)?;
        let at = SourceSpan::new((inner.span().offset() + from).into(), inner.span().len());
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.to_string(),
            inner.data(),
            at,
            inner.line() + skipped,
            inner.column(),
            inner.line_count() + skipped,
        )))
    }
}

impl fmt::Debug for Adapter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.d.message)
    }
}

impl fmt::Display for Adapter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]: {}",
            self.d.severity.as_str(),
            self.d.code,
            self.d.message
        )
    }
}

impl std::error::Error for Adapter<'_> {}

impl miette::Diagnostic for Adapter<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Info => miette::Severity::Advice,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.d.labels.is_empty() {
            None
        } else {
            Some(self.src)
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.d.labels.is_empty() {
            return None;
        }
        let len = self.src.text.len();
        Some(Box::new(self.d.labels.iter().enumerate().map(
            move |(i, l)| {
                let start = l.span.start.min(len);
                let end = l.span.end.clamp(start, len);
                let span = (start, end - start);
                if i == 0 {
                    LabeledSpan::new_primary_with_span(Some(l.text.clone()), span)
                } else {
                    LabeledSpan::new_with_span(Some(l.text.clone()), span)
                }
            },
        )))
    }
}

/// The most diagnostics `human` renders; the rest are counted in one line.
pub const MAX_HUMAN: usize = 100;

/// The longest source line `human` shows in a snippet, and the longest message, label or
/// help text it prints whole.
pub const MAX_SHOWN_TEXT: usize = 400;

/// `d` fit for a terminal: texts over [`MAX_SHOWN_TEXT`] cut with their length said, and
/// when a label sits on a source line longer than that, no snippet but the position.
fn summarised(d: &Diagnostic, src: &Source) -> Diagnostic {
    let cut = |t: &str| -> String {
        if t.len() <= MAX_SHOWN_TEXT {
            return t.to_string();
        }
        let mut end = MAX_SHOWN_TEXT / 2;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes in all)", &t[..end], t.len())
    };
    let mut out = d.clone();
    out.message = cut(&d.message);
    out.help = d.help.as_deref().map(cut);
    for l in &mut out.labels {
        l.text = cut(&l.text);
    }
    let long_line = d.labels.iter().find_map(|l| {
        let start = l.span.start.min(src.text.len());
        let from = src.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let to = src.text[start..]
            .find('\n')
            .map_or(src.text.len(), |i| start + i);
        (to - from > MAX_SHOWN_TEXT).then_some((start, to - from))
    });
    if let Some((at, len)) = long_line {
        let (line, col) = line_col(&src.text, at);
        out.message = format!(
            "{} (at {}:{line}:{col}; the line is {len} bytes long, not shown)",
            out.message, src.name
        );
        out.labels.clear();
    }
    out
}

/// Renders diagnostics the way a person reads them; `color` adds ANSI styling. At most
/// [`MAX_HUMAN`] are rendered, each summarised so that none prints megabytes.
#[must_use]
pub fn human(diags: &[Diagnostic], src: &Source, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    let snippets = Snippets::new(&src.name, &src.text);
    for d in diags.iter().take(MAX_HUMAN) {
        let d = &summarised(d, src);
        let adapter = Adapter { d, src: &snippets };
        let mut one = String::new();
        if handler.render_report(&mut one, &adapter).is_err() {
            one = format!("{}[{}]: {}\n", d.severity.as_str(), d.code, d.message);
        }
        out.push_str(&one);
        if !one.ends_with('\n') {
            out.push('\n');
        }
    }
    if diags.len() > MAX_HUMAN {
        let _ = writeln!(
            out,
            "… and {} more diagnostics for {} not shown (`--format json` lists up to 1000 of each code)",
            diags.len() - MAX_HUMAN,
            src.name
        );
    }
    out
}

/// One diagnostic as JSON.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub file: String,
    /// 1-based; absent for problems outside the file (e.g. an unused `--var`).
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    /// Byte offset and length of the primary span.
    pub span: Option<JsonSpan>,
    pub labels: Vec<JsonLabel>,
    pub help: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct JsonSpan {
    pub offset: usize,
    pub length: usize,
}

#[derive(Debug, Serialize)]
pub struct JsonLabel {
    pub line: usize,
    pub column: usize,
    pub span: JsonSpan,
    pub text: String,
}

/// Diagnostics as JSON objects.
#[must_use]
pub fn json_values(diags: &[Diagnostic], src: &Source) -> Vec<JsonDiagnostic> {
    diags
        .iter()
        .map(|d| {
            let primary = d.primary_span();
            let start = primary.map(|s| line_col(&src.text, s.start));
            let end = primary.map(|s| line_col(&src.text, s.end));
            JsonDiagnostic {
                code: d.code.to_string(),
                severity: d.severity,
                message: d.message.clone(),
                file: src.name.clone(),
                line: start.map(|p| p.0),
                column: start.map(|p| p.1),
                end_line: end.map(|p| p.0),
                end_column: end.map(|p| p.1),
                span: primary.map(|s| JsonSpan {
                    offset: s.start,
                    length: s.len(),
                }),
                labels: d
                    .labels
                    .iter()
                    .map(|l| {
                        let (line, column) = line_col(&src.text, l.span.start);
                        JsonLabel {
                            line,
                            column,
                            span: JsonSpan {
                                offset: l.span.start,
                                length: l.span.len(),
                            },
                            text: l.text.clone(),
                        }
                    })
                    .collect(),
                help: d.help.clone(),
            }
        })
        .collect()
}

/// Escapes the message of a GitHub workflow command.
#[must_use]
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property (`file=`, `title=`) of a GitHub workflow command.
#[must_use]
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands (`::error file=…,line=…::message`), one per line.
#[must_use]
pub fn github(diags: &[Diagnostic], src: &Source) -> String {
    let mut out = String::new();
    for d in diags {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "notice",
        };
        let mut props = vec![format!("file={}", escape_property(&src.name))];
        if let Some(s) = d.primary_span() {
            let (l, c) = line_col(&src.text, s.start);
            let (el, ec) = line_col(&src.text, s.end);
            props.push(format!("line={l}"));
            props.push(format!("col={c}"));
            props.push(format!("endLine={el}"));
            if el == l {
                props.push(format!("endColumn={ec}"));
            }
        }
        props.push(format!(
            "title={}",
            escape_property(&format!("{} {}", d.code, d.code.title()))
        ));
        let mut message = d.message.clone();
        if let Some(h) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(h);
        }
        let _ = writeln!(
            out,
            "::{level} {}::{}",
            props.join(","),
            escape_data(&message)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every span of texts with each kind of line break reads the same from [`Snippets`] as
    /// from miette's own `str` source: contents, span, line, column and line count.
    #[test]
    fn snippets_read_as_the_whole_text_does() {
        let texts = [
            "",
            "a",
            "\n\n\n",
            "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n",
            "one\r\ntwo\r\nthree\r\nfour\r\nfive\r\nsix\r\n",
            "a\rb\rc\rd\re\rf\rg",
            "x\r\n\ry\n\r\nz\r\r\n\nw\nlast line without a break",
        ];
        for text in texts {
            let snippets = Snippets::new("p.nq", text);
            for start in 0..=text.len() {
                for len in 0..=(text.len() - start).min(12) {
                    for context in 0..4 {
                        let span = SourceSpan::new(start.into(), len);
                        let want = text.read_span(&span, context, context);
                        let got = snippets.read_span(&span, context, context);
                        let (want, got) = match (want, got) {
                            (Ok(w), Ok(g)) => (w, g),
                            (Err(_), Err(_)) => continue,
                            (w, g) => {
                                panic!("{text:?} {start}+{len}: {:?} {:?}", w.is_ok(), g.is_ok())
                            }
                        };
                        let parts = |c: &dyn SpanContents<'_>| {
                            (
                                c.data().to_vec(),
                                *c.span(),
                                c.line(),
                                c.column(),
                                c.line_count(),
                            )
                        };
                        assert_eq!(
                            parts(&*got),
                            parts(&*want),
                            "{text:?} {start}+{len} ctx {context}"
                        );
                        assert_eq!(got.name(), Some("p.nq"));
                    }
                }
            }
        }
    }
}
