//! The one diagnostic type every stage reports: a code, a message naming the values, labelled
//! spans and a help line with the fix.

use std::collections::BTreeMap;

use crate::codes::Code;
use crate::span::Span;

/// How bad a diagnostic is. Errors refuse compilation; warnings only with `--deny-warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A labelled place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// One line, lowercase, naming the values involved.
    pub message: String,
    /// The first label is the primary one; there may be none for problems outside the file.
    pub labels: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with the code's usual severity.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    #[must_use]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The primary span, if any.
    #[must_use]
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }
}

/// The most diagnostics of one code a report lists; the rest are counted in the last one
/// listed. A 10 MB policy can hold half a million mistakes of one kind: listing (and
/// working out) each took a minute and printed hundreds of megabytes.
pub const MAX_PER_CODE: usize = 1000;

/// Diagnostics collected by a stage, in the order found.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    /// How many of `items` have each code.
    counts: BTreeMap<Code, usize>,
    /// Diagnostics a check did not build because [`Diagnostics::crowded`] said so.
    skipped: BTreeMap<Code, usize>,
}

impl Diagnostics {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        *self.counts.entry(d.code).or_default() += 1;
        self.items.push(d);
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        for d in other {
            self.push(d);
        }
    }

    /// Adds the diagnostics `other` collected (and the ones it skipped) after these.
    pub fn append(&mut self, other: Diagnostics) {
        for (code, n) in other.skipped {
            *self.skipped.entry(code).or_default() += n;
        }
        self.extend(other.items);
    }

    /// Whether [`MAX_PER_CODE`] diagnostics of `code` are in already: a check that finds
    /// one more then calls [`Diagnostics::skip`] instead of building it (suggestions,
    /// labels), so that a file of a million mistakes is still judged in a second.
    #[must_use]
    pub fn crowded(&self, code: Code) -> bool {
        self.counts.get(&code).is_some_and(|n| *n >= MAX_PER_CODE)
    }

    /// Counts a diagnostic of `code` that was found but not built.
    pub fn skip(&mut self, code: Code) {
        *self.skipped.entry(code).or_default() += 1;
    }

    /// Keeps the diagnostics `keep` says yes to.
    pub fn retain(&mut self, keep: impl FnMut(&Diagnostic) -> bool) {
        self.items.retain(keep);
        self.counts.clear();
        for d in &self.items {
            *self.counts.entry(d.code).or_default() += 1;
        }
        let counts = &self.counts;
        self.skipped.retain(|c, _| counts.contains_key(c));
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Root causes first (syntax, unknown keywords, undefined variables: see
    /// `check::is_root`), then by position (spanless first), then code, so output is stable
    /// and the cause comes before what it implies. At most [`MAX_PER_CODE`] of a code are
    /// kept (the first in this order); the last kept one says how many more there are.
    #[must_use]
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            let ka = a.primary_span().map(|s| (s.start, s.end));
            let kb = b.primary_span().map(|s| (s.start, s.end));
            let (ra, rb) = (crate::check::is_root(a.code), crate::check::is_root(b.code));
            rb.cmp(&ra).then(ka.cmp(&kb)).then(a.code.cmp(&b.code))
        });
        self.items.dedup();
        let mut seen: BTreeMap<Code, usize> = BTreeMap::new();
        let mut last: BTreeMap<Code, usize> = BTreeMap::new();
        let mut kept = Vec::with_capacity(self.items.len().min(MAX_PER_CODE * 4));
        for d in self.items {
            let n = seen.entry(d.code).or_default();
            *n += 1;
            if *n <= MAX_PER_CODE {
                last.insert(d.code, kept.len());
                kept.push(d);
            }
        }
        for (code, n) in seen {
            let more =
                n.saturating_sub(MAX_PER_CODE) + self.skipped.get(&code).copied().unwrap_or(0);
            if let Some(d) = last
                .get(&code)
                .and_then(|i| kept.get_mut(*i))
                .filter(|_| more > 0)
            {
                let note = format!("{more} more {code} diagnostics like this one are not listed");
                d.help = Some(match d.help.take() {
                    Some(h) => format!("{h}\n{note}"),
                    None => note,
                });
            }
        }
        kept
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(code: Code, i: usize) -> Diagnostic {
        Diagnostic::new(code, format!("problem {i}")).label(Span::new(i, i + 1), "here")
    }

    #[test]
    fn a_code_lists_at_most_its_cap_and_counts_the_rest() {
        let mut d = Diagnostics::new();
        for i in (0..MAX_PER_CODE + 40).rev() {
            d.push(at(Code::NQ041, i));
        }
        d.push(at(Code::NQ024, 5));
        assert!(d.crowded(Code::NQ041) && !d.crowded(Code::NQ024));
        d.skip(Code::NQ041);
        let sorted = d.into_sorted();
        let listed: Vec<&Diagnostic> = sorted.iter().filter(|d| d.code == Code::NQ041).collect();
        assert_eq!(listed.len(), MAX_PER_CODE);
        // The first in source order are kept; the last of them counts the rest (40 over the
        // cap, 1 never built).
        assert_eq!(listed[0].message, "problem 0");
        let last = listed[MAX_PER_CODE - 1];
        assert_eq!(last.message, format!("problem {}", MAX_PER_CODE - 1));
        assert_eq!(
            last.help.as_deref(),
            Some("41 more NQ041 diagnostics like this one are not listed")
        );
        assert_eq!(sorted.iter().filter(|d| d.code == Code::NQ024).count(), 1);
    }

    #[test]
    fn under_the_cap_nothing_changes() {
        let mut d = Diagnostics::new();
        d.push(at(Code::NQ041, 3).help("fix it"));
        d.push(at(Code::NQ041, 1));
        let sorted = d.into_sorted();
        assert_eq!(sorted.len(), 2);
        assert_eq!(sorted[1].help.as_deref(), Some("fix it"));
    }
}
