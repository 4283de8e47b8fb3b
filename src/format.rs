//! `netqos fmt`: the canonical layout of a policy, keeping every comment.
//!
//! One statement per line, four-space indentation, `{ a, b }` sets, at most one blank line
//! kept where the author left one, a blank line around top-level blocks. Values are printed
//! as written (units are the author's choice). Formatting is idempotent.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::span::{LineIndex, Span};
use crate::syntax::ast::*;
use crate::syntax::{Comment, comments, parse};

/// Formats a policy. Refuses (with the diagnostics) a file that does not parse or holds
/// statements netqos cannot read, so nothing is ever lost.
pub fn format(src: &str) -> Result<String, Vec<Diagnostic>> {
    let file = parse(src).map_err(|d| vec![d])?;
    let unknown = crate::check::unknown_statements(&file);
    if !unknown.is_empty() {
        return Err(unknown.into_sorted());
    }
    let mut p = Printer {
        src,
        comments: comments(src),
        next: 0,
        out: String::new(),
        lines: LineIndex::new(src),
        last_end: None,
    };
    p.file(&file);
    Ok(p.out)
}

/// Diagnostics collected by a stage, if any (helper for callers wanting a `Diagnostics`).
pub fn into_diagnostics(v: Vec<Diagnostic>) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.extend(v);
    d
}

struct Printer<'a> {
    src: &'a str,
    comments: Vec<Comment>,
    next: usize,
    out: String,
    lines: LineIndex,
    /// Source end of the last element printed in the current block.
    last_end: Option<usize>,
}

const INDENT: &str = "    ";

impl Printer<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.lines.line(offset)
    }

    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
    }

    /// Whether the source has a blank line between `last_end` and `at`.
    fn blank_before(&self, at: usize) -> bool {
        let Some(end) = self.last_end else {
            return false;
        };
        let between = &self.src[end.min(at)..at];
        let segments: Vec<&str> = between.split('\n').collect();
        segments.len() > 2
            && segments[1..segments.len() - 1]
                .iter()
                .any(|l| l.trim().is_empty())
    }

    fn blank_line(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") && !self.out.ends_with("{\n") {
            self.out.push('\n');
        }
    }

    /// Emits comments starting before `before` as their own lines.
    fn leading(&mut self, before: usize, depth: usize) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= before {
                break;
            }
            let (start, text) = (c.span.start, c.text.clone());
            if self.blank_before(start) {
                self.blank_line();
            }
            self.indent(depth);
            self.out.push_str(&text);
            self.out.push('\n');
            self.last_end = Some(start + text.len());
            self.next += 1;
        }
    }

    /// If the next comment sits on the line of `end` (and before `limit`), returns it.
    fn take_trailing(&mut self, end: usize, limit: usize) -> Option<String> {
        let c = self.comments.get(self.next)?;
        if c.span.start >= end
            && c.span.start < limit
            && self.line_of(c.span.start) == self.line_of(end.saturating_sub(1))
        {
            let text = c.text.clone();
            self.next += 1;
            return Some(text);
        }
        None
    }

    fn finish_line(&mut self, end: usize, limit: usize) {
        if let Some(c) = self.take_trailing(end, limit) {
            self.out.push_str("  ");
            self.out.push_str(&c);
        }
        self.out.push('\n');
        self.last_end = Some(end);
    }

    /// Prints one simple statement spanning `span`.
    fn simple(&mut self, text: &str, span: Span, depth: usize, limit: usize) {
        self.leading(span.start, depth);
        if self.blank_before(span.start) {
            self.blank_line();
        }
        // Comments inside the statement (a multi-line set) go before it.
        self.leading(span.end, depth);
        self.indent(depth);
        self.out.push_str(text);
        self.finish_line(span.end, limit);
    }

    fn file(&mut self, f: &File) {
        let limit = self.src.len() + 1;
        if let Some(h) = &f.header {
            let start = self.src[..h.span.start].rfind("netqos").unwrap_or(0);
            self.simple(
                &format!("netqos {}", h.node),
                Span::new(start, h.span.end),
                0,
                limit,
            );
        }
        let mut prev_block = f.header.is_some();
        for item in &f.items {
            let is_block = matches!(item, Item::Interface(_) | Item::Pods(_));
            if is_block || prev_block {
                self.blank_line();
            }
            self.leading(item.span().start, 0);
            match item {
                Item::Let(l) => {
                    let text = format!("let {} = {}", l.name.node, value(&l.value));
                    self.simple(&text, l.span, 0, limit);
                }
                Item::Interface(i) => {
                    let mut head = format!("interface {}", scalar(&i.name));
                    if let Some(d) = &i.direction {
                        head.push(' ');
                        head.push_str(d.node.as_str());
                    }
                    self.block(&head, i.span, 0, limit, |p, inner_limit| {
                        for s in &i.stmts {
                            p.stmt(s, 1, inner_limit);
                        }
                    });
                }
                Item::Pods(pods) => {
                    self.block("pods", pods.span, 0, limit, |p, inner_limit| {
                        for s in &pods.stmts {
                            p.simple(&pods_stmt(s), s.span, 1, inner_limit);
                        }
                    });
                }
                Item::Allow(a) => {
                    let codes: Vec<String> =
                        a.codes.iter().map(|c| c.node.to_uppercase()).collect();
                    self.simple(&format!("allow {}", codes.join(", ")), a.span, 0, limit);
                }
                Item::Unknown(u) => self.simple(&u.text, u.span, 0, limit),
            }
            prev_block = is_block;
        }
        self.leading(self.src.len() + 1, 0);
        while self.out.ends_with("\n\n") {
            self.out.pop();
        }
    }

    /// Prints `head {`, the body, and `}`, with comments in their places.
    fn block(
        &mut self,
        head: &str,
        span: Span,
        depth: usize,
        limit: usize,
        body: impl FnOnce(&mut Self, usize),
    ) {
        self.leading(span.start, depth);
        if self.blank_before(span.start) {
            self.blank_line();
        }
        let open = self.src[span.start..span.end]
            .find('{')
            .map_or(span.start, |i| span.start + i);
        let close = span.end.saturating_sub(1);
        self.indent(depth);
        self.out.push_str(head);
        self.out.push_str(" {");
        let one_line = self.line_of(span.start) == self.line_of(close);
        let header_comment = if one_line {
            self.peek_after(span.end, limit)
        } else {
            self.take_trailing(open + 1, close)
        };
        if let Some(c) = &header_comment {
            self.out.push_str("  ");
            self.out.push_str(c);
        }
        self.out.push('\n');
        self.last_end = None;
        body(self, close);
        self.leading(close, depth + 1);
        self.indent(depth);
        self.out.push('}');
        if one_line && header_comment.is_some() {
            self.out.push('\n');
            self.last_end = Some(span.end);
        } else {
            self.finish_line(span.end, limit);
        }
    }

    /// Takes a comment on the same line after `end` (for one-line blocks).
    fn peek_after(&mut self, end: usize, limit: usize) -> Option<String> {
        self.take_trailing(end, limit)
    }

    fn stmt(&mut self, s: &Stmt, depth: usize, limit: usize) {
        match &s.kind {
            StmtKind::Class(c) => {
                let head = format!("class {}", c.name.node);
                self.block(&head, s.span, depth, limit, |p, inner_limit| {
                    for s in &c.stmts {
                        p.stmt(s, depth + 1, inner_limit);
                    }
                });
            }
            other => {
                let text = stmt_text(other);
                self.simple(&text, s.span, depth, limit);
            }
        }
    }
}

fn scalar(s: &Scalar) -> String {
    match s {
        Scalar::Atom(a) => a.node.clone(),
        Scalar::Str(a) => format!("\"{}\"", a.node),
        Scalar::Var(a) => format!("${}", a.node),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Scalar(s) => scalar(s),
        Value::Set(items, _) if items.is_empty() => "{ }".to_string(),
        Value::Set(items, _) => format!(
            "{{ {} }}",
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn stmt_text(k: &StmtKind) -> String {
    match k {
        StmtKind::Rate(s) => format!("rate {}", scalar(s)),
        StmtKind::Ceil(s) => format!("ceil {}", scalar(s)),
        StmtKind::Prio(s) => format!("prio {}", scalar(s)),
        StmtKind::Burst(s) => format!("burst {}", scalar(s)),
        StmtKind::Cburst(s) => format!("cburst {}", scalar(s)),
        StmtKind::Quantum(s) => format!("quantum {}", scalar(s)),
        StmtKind::R2q(s) => format!("r2q {}", scalar(s)),
        StmtKind::Mtu(s) => format!("mtu {}", scalar(s)),
        StmtKind::Id(s) => format!("id {}", scalar(s)),
        StmtKind::Ifb(s) => format!("ifb {}", scalar(s)),
        StmtKind::DefaultRef(s) => format!("default {}", scalar(s)),
        StmtKind::DefaultFlag => "default".to_string(),
        StmtKind::Qdisc(q) => {
            let mut t = format!("qdisc {}", q.kind.node);
            for (n, v) in &q.params {
                t.push_str(&format!(" {} {}", n.node, scalar(v)));
            }
            t
        }
        StmtKind::Match(m) => {
            let mut t = "match".to_string();
            for f in &m.fields {
                t.push(' ');
                t.push_str(&match f {
                    MatchField::Proto(p) => p.node.clone(),
                    MatchField::Addr(d, list) => format!(
                        "{} {}",
                        d.node.as_str(),
                        list.iter().map(value).collect::<Vec<_>>().join(", ")
                    ),
                    MatchField::Port(d, list) => format!(
                        "{} {}",
                        d.node.as_str(),
                        list.iter().map(value).collect::<Vec<_>>().join(", ")
                    ),
                    MatchField::Bad(b) => b.node.clone(),
                });
            }
            t
        }
        StmtKind::Class(c) => format!("class {}", c.name.node),
        StmtKind::Unknown(u) => u.text.clone(),
    }
}

fn pods_stmt(s: &PodsStmt) -> String {
    match &s.kind {
        PodsStmtKind::Cni(c) => format!("cni {}", c.node),
        PodsStmtKind::CniFile(f) => format!("cni file {}", scalar(f)),
        PodsStmtKind::Burst(b) => format!("burst {}", scalar(b)),
        PodsStmtKind::Limit(l) => {
            let mut t = format!("limit {}", l.selector.node);
            for (d, v) in &l.rates {
                t.push_str(&format!(" {} {}", d.node.as_str(), scalar(v)));
            }
            t
        }
        PodsStmtKind::Unknown(u) => u.text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_one_line_classes_and_keeps_comments() {
        let src = "netqos 1\n# top\nlet x = {a,b}\ninterface eth0 { # head\n  rate 1gbit\n\n\n  class web   { rate 400mbit  default }   # fallback\n}\n";
        let out = format(src).unwrap();
        assert_eq!(
            out,
            "netqos 1\n\n# top\nlet x = { a, b }\n\ninterface eth0 {  # head\n    rate 1gbit\n\n    class web {  # fallback\n        rate 400mbit\n        default\n    }\n}\n"
        );
        assert_eq!(format(&out).unwrap(), out);
    }
}
