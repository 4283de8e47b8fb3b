//! Rendering diagnostics: human (miette), JSON (one object per diagnostic) and GitHub
//! workflow-command annotations for PR review.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
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
    src: NamedSource<String>,
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
            Some(&self.src)
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.d.labels.is_empty() {
            return None;
        }
        let len = self.src.inner().len();
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

/// Renders diagnostics the way a person reads them; `color` adds ANSI styling.
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
    for d in diags {
        let adapter = Adapter {
            d,
            src: NamedSource::new(src.name.clone(), src.text.clone()),
        };
        let mut one = String::new();
        if handler.render_report(&mut one, &adapter).is_err() {
            one = format!("{}[{}]: {}\n", d.severity.as_str(), d.code, d.message);
        }
        out.push_str(&one);
        if !one.ends_with('\n') {
            out.push('\n');
        }
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
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property (`file=`, `title=`) of a GitHub workflow command.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands (`::error file=…,line=…::message`), one per line.
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
        out.push_str(&format!(
            "::{level} {}::{}\n",
            props.join(","),
            escape_data(&message)
        ));
    }
    out
}
