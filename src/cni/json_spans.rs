//! Byte spans of the values in a JSON text, so conflist diagnostics can point at the entry
//! they are about and the patched file can be the original text with one insertion.
//!
//! The scanner runs only on text `serde_json` has already accepted; it never panics and
//! returns `None` on anything it does not understand.

use crate::span::Span;

/// One JSON value and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    /// A string, number, `true`, `false` or `null` (the text is in the span).
    Scalar,
}

/// `"key": value` in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key with escapes left as written (keys netqos looks for have none).
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    /// The member `key` of an object.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Member> {
        match &self.kind {
            Kind::Object(members) => members.iter().find(|m| m.key == key),
            _ => None,
        }
    }

    /// The elements of an array.
    #[must_use]
    pub fn elements(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Array(items) => Some(items),
            _ => None,
        }
    }

    /// How this element is laid out in `text`: the indentation of its line (`None`: it is
    /// not on a line of its own) and the step its members add, read off the indentation of
    /// its member `first` (tabs stay tabs; two spaces when that says nothing).
    #[must_use]
    pub fn layout(&self, text: &str, first: &str) -> (Option<String>, String) {
        let lead = line_lead(text, self.span.start);
        if !is_blank(lead) {
            return (None, "  ".into());
        }
        let step = self
            .get(first)
            .and_then(|m| line_lead(text, m.key_span.start).strip_prefix(lead))
            .filter(|s| !s.is_empty() && is_blank(s))
            .unwrap_or("  ");
        (Some(lead.to_string()), step.to_string())
    }
}

/// The text of the line before byte `at`.
fn line_lead(text: &str, at: usize) -> &str {
    let before = &text[..at];
    &before[before.rfind('\n').map_or(0, |i| i + 1)..]
}

fn is_blank(s: &str) -> bool {
    s.chars().all(|c| c == ' ' || c == '\t')
}

/// Scans a whole JSON document.
#[must_use]
pub fn scan(text: &str) -> Option<Node> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let node = s.value()?;
    s.ws();
    (s.i == s.b.len()).then_some(node)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn value(&mut self) -> Option<Node> {
        self.ws();
        let start = self.i;
        let kind =
            match *self.b.get(self.i)? {
                b'{' => Kind::Object(self.nested(Self::members)?),
                b'[' => Kind::Array(self.nested(Self::items)?),
                b'"' => {
                    self.string()?;
                    Kind::Scalar
                }
                _ => {
                    while self.b.get(self.i).is_some_and(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')
                    }) {
                        self.i += 1;
                    }
                    if self.i == start {
                        return None;
                    }
                    Kind::Scalar
                }
            };
        Some(Node {
            span: Span::new(start, self.i),
            kind,
        })
    }

    /// Reads an object or array with `inner`, past its opening byte, at most 512 deep.
    fn nested<T>(&mut self, inner: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        self.depth += 1;
        if self.depth > 512 {
            return None;
        }
        self.i += 1;
        let out = inner(self)?;
        self.depth -= 1;
        Some(out)
    }

    /// Calls `each` for every element of a list closed by `close`, separated by commas.
    fn list(&mut self, close: u8, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.ws();
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
            return Some(());
        }
        loop {
            each(self)?;
            self.ws();
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn members(&mut self) -> Option<Vec<Member>> {
        let mut members = Vec::new();
        self.list(b'}', |s| {
            s.ws();
            let key_start = s.i;
            s.string()?;
            let key_span = Span::new(key_start, s.i);
            let key = std::str::from_utf8(&s.b[key_start + 1..s.i - 1])
                .ok()?
                .to_string();
            s.eat(b':')?;
            let value = s.value()?;
            members.push(Member {
                key,
                key_span,
                value,
            });
            Some(())
        })?;
        Some(members)
    }

    fn items(&mut self) -> Option<Vec<Node>> {
        let mut items = Vec::new();
        self.list(b']', |s| {
            items.push(s.value()?);
            Some(())
        })?;
        Some(items)
    }

    /// Skips a string literal starting at the current byte.
    fn string(&mut self) -> Option<()> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let t = r#"{ "a": [1, {"b": "x\"y"}], "c": true }"#;
        let n = scan(t).unwrap();
        let a = n.get("a").unwrap();
        assert_eq!(
            &t[a.value.span.start..a.value.span.end],
            r#"[1, {"b": "x\"y"}]"#
        );
        let items = a.value.elements().unwrap();
        assert_eq!(
            &t[items[1].span.start..items[1].span.end],
            r#"{"b": "x\"y"}"#
        );
        assert_eq!(
            &t[n.get("c").unwrap().key_span.start..n.get("c").unwrap().key_span.end],
            "\"c\""
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for t in ["", "{", "[1,", "{\"a\"}", "\"abc", "{\"a\":1,}", "]"] {
            assert!(scan(t).is_none(), "{t}");
        }
    }
}
