//! The policy reader: text → [`File`] in one pass, one method per rule of
//! `grammar/netqos.pest`, named after it and trying the same alternatives in the same order,
//! so it accepts exactly what the grammar accepts and builds the tree the grammar's pairs
//! gave. Failures are reported to the [`Tracker`] the way pest records them, which makes a
//! syntax error the same NQ040 as the grammar's (`tests/parse_diff.rs` proves both
//! against the pest oracle, `super::reference`).
//!
//! The reader works on bytes: every token of the grammar is ASCII, and `ANY` in a negated
//! run (`(!"\n" ~ ANY)*`) never stops inside a multi-byte character, since UTF-8 continuation
//! bytes are never ASCII. Blocks are followed at most [`MAX_DEPTH`] braces deep; deeper is
//! NQ040 "nests blocks too deeply" (pest's own limit is its stack).

use super::ast::*;
use super::error;
use super::track::{Rule, Tracker, rule_words};
use crate::diagnostic::Diagnostic;
use crate::span::{Span, Spanned};

/// How many braces deep the reader follows blocks (HTB itself allows 8 levels of classes).
pub const MAX_DEPTH: usize = 256;

/// Parses a policy. On a syntax error returns the NQ040 diagnostic instead of a tree.
pub fn parse(src: &str) -> Result<File, Diagnostic> {
    let mut r = Reader {
        src,
        b: src.as_bytes(),
        pos: 0,
        t: Tracker::default(),
        depth: 0,
        too_deep: None,
    };
    let file = r.file();
    if let Some(at) = r.too_deep {
        return Err(error::too_deep(src, at));
    }
    file.ok_or_else(|| {
        let mut words: Vec<&'static str> = r.t.rules.iter().map(|&x| rule_words(x)).collect();
        error::syntax_error(src, r.t.pos, &mut words)
    })
}

struct Reader<'s> {
    src: &'s str,
    b: &'s [u8],
    pos: usize,
    t: Tracker,
    /// Braces open around `pos`.
    depth: usize,
    /// Where the reader gave up on nesting: every rule fails from then on.
    too_deep: Option<usize>,
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// A character a keyword cannot be followed by (`word_end` fails on it).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

fn is_atom(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b':' | b'/' | b'%' | b'-' | b'_' | b'+' | b'*')
}

/// Characters of `unknown_word`, `selector` and `bad_field`.
fn is_token(c: u8) -> bool {
    !matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'{' | b'}' | b'#')
}

fn is_bare_name(c: u8) -> bool {
    is_token(c) && c != b'"' && c != b'$'
}

/// The keyword of a statement: its text up to the first blank or `{`.
fn keyword_of(text: &str, start: usize) -> Span {
    let len = text
        .find(|c: char| c.is_whitespace() || c == '{')
        .unwrap_or(text.len());
    Span::new(start, start + len)
}

fn keyword_span_of(span: Span, kw: &str) -> Span {
    Span::new(span.start, span.start + kw.len())
}

impl<'s> Reader<'s> {
    // ------------------------------------------------------------------ characters

    #[inline]
    fn peek(&self) -> u8 {
        self.b.get(self.pos).copied().unwrap_or(0)
    }

    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// Advances while `f` holds; returns whether anything was read.
    #[inline]
    fn run(&mut self, f: impl Fn(u8) -> bool) -> bool {
        let start = self.pos;
        while self.pos < self.b.len() && f(self.b[self.pos]) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// A literal.
    #[inline]
    fn lit(&mut self, s: &str) -> bool {
        if self.b[self.pos..].starts_with(s.as_bytes()) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// `"kw" ~ word_end`.
    #[inline]
    fn kw(&mut self, s: &str) -> bool {
        let rest = &self.b[self.pos..];
        if rest.starts_with(s.as_bytes()) && !rest.get(s.len()).is_some_and(|&c| is_word(c)) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// `sp`: one or more blanks.
    #[inline]
    fn sp(&mut self) -> bool {
        self.run(is_blank)
    }

    /// `osp`.
    #[inline]
    fn osp(&mut self) {
        self.run(is_blank);
    }

    /// The implicit `(WHITESPACE | COMMENT)*` between the tokens of a non-atomic rule.
    fn skip(&mut self) {
        loop {
            self.run(is_ws);
            if self.peek() == b'#' {
                self.past_comment();
            } else {
                return;
            }
        }
    }

    /// Past a comment, up to (not over) its newline.
    fn past_comment(&mut self) {
        self.pos = memchr_nl(&self.b[self.pos..]).map_or(self.b.len(), |n| self.pos + n);
    }

    /// `comma`: `,` with blanks before it and blanks, newlines and comments after it
    /// (inside a set, which is not atomic, anything skippable before it too).
    fn comma(&mut self, in_set: bool) -> bool {
        let start = self.pos;
        if in_set {
            self.skip();
        } else {
            self.osp();
        }
        if self.lit(",") {
            self.skip();
            true
        } else {
            self.pos = start;
            false
        }
    }

    fn text(&self, start: usize) -> Spanned<String> {
        Spanned::new(
            self.src[start..self.pos].to_string(),
            Span::new(start, self.pos),
        )
    }

    fn span(&self, start: usize) -> Span {
        Span::new(start, self.pos)
    }

    /// Opens a block at the `{` under the cursor; false (and the parse is over) when that
    /// is one too many.
    fn open(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            self.too_deep.get_or_insert(self.pos);
            return false;
        }
        self.depth += 1;
        true
    }

    // ------------------------------------------------------------------ atomic tokens

    /// An `@` rule made of one run of characters, tracked from a non-atomic caller.
    fn token(&mut self, rule: Rule, f: impl Fn(u8) -> bool) -> Option<Spanned<String>> {
        let start = self.pos;
        if self.run(f) {
            Some(self.text(start))
        } else {
            self.t.fail_at(rule, start);
            None
        }
    }

    fn ident(&mut self) -> Option<Spanned<String>> {
        let start = self.pos;
        let c = self.peek();
        if c.is_ascii_alphabetic() || c == b'_' {
            self.pos += 1;
            self.run(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
            Some(self.text(start))
        } else {
            self.t.fail_at(Rule::ident, start);
            None
        }
    }

    /// An `@` rule `("a" | "b") ~ word_end`: which one matched.
    fn either(&mut self, rule: Rule, a: &str, b: &str) -> Option<(bool, Span)> {
        let start = self.pos;
        if self.kw(a) {
            Some((true, self.span(start)))
        } else if self.kw(b) {
            Some((false, self.span(start)))
        } else {
            self.t.fail_at(rule, start);
            None
        }
    }

    // ------------------------------------------------------------------ file

    fn file(&mut self) -> Option<File> {
        let mark = self.t.enter(0);
        self.skip();
        let header = self.header();
        self.skip();
        let mut items = Vec::new();
        while self.too_deep.is_none() {
            let before = self.pos;
            self.skip();
            match self.item() {
                Some(item) => items.push(item),
                None => {
                    self.pos = before;
                    break;
                }
            }
        }
        self.skip();
        if self.too_deep.is_none() && self.at_end() {
            return Some(File { header, items });
        }
        self.t.fail_at(Rule::EOI, self.pos);
        self.t.fail(Rule::file, mark);
        None
    }

    fn header(&mut self) -> Option<Spanned<String>> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("netqos")
            && self.sp()
            && let Some(v) = self.token(Rule::version, |c| c.is_ascii_digit())
        {
            return Some(v);
        }
        self.pos = start;
        self.t.fail(Rule::header, mark);
        None
    }

    fn item(&mut self) -> Option<Item> {
        if let Some(l) = self.let_stmt() {
            return Some(Item::Let(l));
        }
        if let Some(a) = self.allow_stmt() {
            return Some(Item::Allow(a));
        }
        if let Some(i) = self.interface() {
            return Some(Item::Interface(i));
        }
        if let Some(p) = self.pods() {
            return Some(Item::Pods(p));
        }
        self.unknown().map(Item::Unknown)
    }

    fn allow_stmt(&mut self) -> Option<Allow> {
        let start = self.pos;
        let mark = self.t.enter(start);
        let code = |c: u8| c.is_ascii_alphanumeric();
        if self.kw("allow")
            && self.sp()
            && let Some(first) = self.token(Rule::allow_code, code)
        {
            let mut codes = vec![first];
            loop {
                let before = self.pos;
                if !self.comma(false) {
                    break;
                }
                match self.token(Rule::allow_code, code) {
                    Some(c) => codes.push(c),
                    None => {
                        self.pos = before;
                        break;
                    }
                }
            }
            return Some(Allow {
                codes,
                span: self.span(start),
            });
        }
        self.pos = start;
        self.t.fail(Rule::allow_stmt, mark);
        None
    }

    // ------------------------------------------------------------------ values

    fn let_stmt(&mut self) -> Option<Let> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("let")
            && self.sp()
            && let Some(name) = self.ident()
        {
            self.osp();
            if self.lit("=") {
                self.osp();
                if let Some(value) = self.value() {
                    return Some(Let {
                        name,
                        value,
                        span: self.span(start),
                    });
                }
            }
        }
        self.pos = start;
        self.t.fail(Rule::let_stmt, mark);
        None
    }

    /// `value` / `list_item`: a set or a scalar.
    fn value(&mut self) -> Option<Value> {
        if let Some(v) = self.set() {
            return Some(v);
        }
        self.scalar().map(Value::Scalar)
    }

    fn set(&mut self) -> Option<Value> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.peek() == b'{' && self.open() {
            self.pos += 1;
            self.skip();
            let mut items = Vec::new();
            if let Some(first) = self.scalar() {
                items.push(first);
                self.skip();
                loop {
                    let before = self.pos;
                    if self.comma(true)
                        && let Some(s) = self.scalar()
                    {
                        items.push(s);
                        // The repetition skips before its next try.
                        self.skip();
                        continue;
                    }
                    self.pos = before;
                    break;
                }
                self.skip();
                self.comma(true);
            }
            self.skip();
            self.depth -= 1;
            if self.lit("}") {
                return Some(Value::Set(items, self.span(start)));
            }
        }
        self.pos = start;
        self.t.fail(Rule::set, mark);
        None
    }

    fn scalar(&mut self) -> Option<Scalar> {
        if let Some(s) = self.string() {
            return Some(Scalar::Str(s));
        }
        if let Some(v) = self.var_ref() {
            return Some(Scalar::Var(v));
        }
        self.token(Rule::atom, is_atom).map(Scalar::Atom)
    }

    /// `"text"`: the text without the quotes, spanned with them.
    fn string(&mut self) -> Option<Spanned<String>> {
        let start = self.pos;
        if self.peek() == b'"' {
            self.pos += 1;
            let inner = self.pos;
            self.run(|c| c != b'"' && c != b'\n');
            let end = self.pos;
            if self.lit("\"") {
                return Some(Spanned::new(
                    self.src[inner..end].to_string(),
                    self.span(start),
                ));
            }
        }
        self.pos = start;
        self.t.fail_at(Rule::string, start);
        None
    }

    /// `$name`: the name without `$`, spanned with it.
    fn var_ref(&mut self) -> Option<Spanned<String>> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.lit("$")
            && let Some(name) = self.ident()
        {
            return Some(Spanned::new(name.node, self.span(start)));
        }
        self.pos = start;
        self.t.fail(Rule::var_ref, mark);
        None
    }

    /// `list`: list items separated by commas.
    fn list(&mut self) -> Option<Vec<Value>> {
        let start = self.pos;
        let mark = self.t.enter(start);
        let Some(first) = self.value() else {
            self.t.fail(Rule::list, mark);
            return None;
        };
        let mut items = vec![first];
        loop {
            let before = self.pos;
            if !self.comma(false) {
                break;
            }
            match self.value() {
                Some(v) => items.push(v),
                None => {
                    self.pos = before;
                    break;
                }
            }
        }
        Some(items)
    }

    // ------------------------------------------------------------------ interfaces

    fn interface(&mut self) -> Option<Interface> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("interface")
            && self.sp()
            && let Some(name) = self.if_name()
        {
            let mut head_end = self.pos;
            let mut direction = None;
            let before = self.pos;
            if self.sp() {
                match self.either(Rule::direction, "ingress", "egress") {
                    Some((ingress, span)) => {
                        let d = if ingress {
                            Direction::Ingress
                        } else {
                            Direction::Egress
                        };
                        direction = Some(Spanned::new(d, span));
                        head_end = self.pos;
                    }
                    None => self.pos = before,
                }
            }
            self.osp();
            if let Some(stmts) = self.body(Rule::if_body, Self::if_stmt) {
                return Some(Interface {
                    name,
                    direction,
                    stmts,
                    span: self.span(start),
                    head: Span::new(start, head_end),
                });
            }
        }
        self.pos = start;
        self.t.fail(Rule::interface, mark);
        None
    }

    /// `if_name` (and the name of `ifb`): a variable, a string or a bare name.
    fn if_name(&mut self) -> Option<Scalar> {
        if let Some(v) = self.var_ref() {
            return Some(Scalar::Var(v));
        }
        if let Some(s) = self.string() {
            return Some(Scalar::Str(s));
        }
        self.token(Rule::bare_name, is_bare_name).map(Scalar::Atom)
    }

    /// `if_body`, `class_body`, `pods_body`: `{`, statements, `}`.
    fn body<T>(&mut self, rule: Rule, stmt: fn(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.peek() == b'{' && self.open() {
            self.pos += 1;
            let mut stmts = Vec::new();
            while self.too_deep.is_none() {
                let before = self.pos;
                self.skip();
                match stmt(self) {
                    Some(s) => stmts.push(s),
                    None => {
                        self.pos = before;
                        break;
                    }
                }
            }
            self.skip();
            self.depth -= 1;
            if self.too_deep.is_none() && self.lit("}") {
                stmts.shrink_to_fit();
                return Some(stmts);
            }
        }
        self.pos = start;
        self.t.fail(rule, mark);
        None
    }

    /// A `KEYWORD SCALAR` statement.
    fn scalar_stmt(&mut self, rule: Rule, kw: &str) -> Option<Scalar> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw(kw)
            && self.sp()
            && let Some(s) = self.scalar()
        {
            return Some(s);
        }
        self.pos = start;
        self.t.fail(rule, mark);
        None
    }

    fn ifb_stmt(&mut self) -> Option<Scalar> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("ifb")
            && self.sp()
            && let Some(s) = self.if_name()
        {
            return Some(s);
        }
        self.pos = start;
        self.t.fail(Rule::ifb_stmt, mark);
        None
    }

    fn default_flag(&mut self) -> bool {
        let start = self.pos;
        if self.kw("default") {
            true
        } else {
            self.t.fail_at(Rule::default_flag, start);
            false
        }
    }

    /// Wraps a statement's kind with its spans.
    fn stmt(&self, start: usize, kind: StmtKind) -> Stmt {
        let span = self.span(start);
        let keyword = match &kind {
            StmtKind::Class(_) => keyword_span_of(span, "class"),
            _ => keyword_of(&self.src[start..self.pos], start),
        };
        Stmt {
            kind,
            span,
            keyword,
        }
    }

    fn if_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        let kind = if let Some(s) = self.scalar_stmt(Rule::rate_stmt, "rate") {
            StmtKind::Rate(s)
        } else if let Some(s) = self.scalar_stmt(Rule::burst_stmt, "burst") {
            StmtKind::Burst(s)
        } else if let Some(s) = self.scalar_stmt(Rule::cburst_stmt, "cburst") {
            StmtKind::Cburst(s)
        } else if let Some(s) = self.scalar_stmt(Rule::r2q_stmt, "r2q") {
            StmtKind::R2q(s)
        } else if let Some(s) = self.scalar_stmt(Rule::mtu_stmt, "mtu") {
            StmtKind::Mtu(s)
        } else if let Some(s) = self.scalar_stmt(Rule::default_ref, "default") {
            StmtKind::DefaultRef(s)
        } else if let Some(s) = self.ifb_stmt() {
            StmtKind::Ifb(s)
        } else if let Some(c) = self.class() {
            StmtKind::Class(Box::new(c))
        } else {
            StmtKind::Unknown(Box::new(self.unknown()?))
        };
        Some(self.stmt(start, kind))
    }

    // ------------------------------------------------------------------ classes

    fn class(&mut self) -> Option<Class> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("class")
            && self.sp()
            && let Some(name) = self.ident()
        {
            self.osp();
            if let Some(stmts) = self.body(Rule::class_body, Self::class_stmt) {
                let head = Span::new(start, name.span.end);
                return Some(Class {
                    name,
                    stmts,
                    span: self.span(start),
                    head,
                });
            }
        }
        self.pos = start;
        self.t.fail(Rule::class, mark);
        None
    }

    fn class_stmt(&mut self) -> Option<Stmt> {
        let start = self.pos;
        let kind = if let Some(s) = self.scalar_stmt(Rule::rate_stmt, "rate") {
            StmtKind::Rate(s)
        } else if let Some(s) = self.scalar_stmt(Rule::ceil_stmt, "ceil") {
            StmtKind::Ceil(s)
        } else if let Some(s) = self.scalar_stmt(Rule::prio_stmt, "prio") {
            StmtKind::Prio(s)
        } else if let Some(s) = self.scalar_stmt(Rule::burst_stmt, "burst") {
            StmtKind::Burst(s)
        } else if let Some(s) = self.scalar_stmt(Rule::cburst_stmt, "cburst") {
            StmtKind::Cburst(s)
        } else if let Some(s) = self.scalar_stmt(Rule::quantum_stmt, "quantum") {
            StmtKind::Quantum(s)
        } else if let Some(q) = self.qdisc_stmt() {
            StmtKind::Qdisc(Box::new(q))
        } else if let Some(s) = self.scalar_stmt(Rule::id_stmt, "id") {
            StmtKind::Id(s)
        } else if let Some(m) = self.match_stmt() {
            StmtKind::Match(m)
        } else if self.default_flag() {
            StmtKind::DefaultFlag
        } else if let Some(c) = self.class() {
            StmtKind::Class(Box::new(c))
        } else {
            StmtKind::Unknown(Box::new(self.unknown()?))
        };
        Some(self.stmt(start, kind))
    }

    fn qdisc_stmt(&mut self) -> Option<Qdisc> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("qdisc")
            && self.sp()
            && let Some(kind) = self.ident()
        {
            let mut params = Vec::new();
            loop {
                let before = self.pos;
                if self.sp()
                    && let Some(p) = self.qdisc_param()
                {
                    params.push(p);
                    continue;
                }
                self.pos = before;
                break;
            }
            return Some(Qdisc { kind, params });
        }
        self.pos = start;
        self.t.fail(Rule::qdisc_stmt, mark);
        None
    }

    fn qdisc_param(&mut self) -> Option<(Spanned<String>, Scalar)> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if let Some(name) = self.ident()
            && self.sp()
            && let Some(value) = self.scalar()
        {
            return Some((name, value));
        }
        self.pos = start;
        self.t.fail(Rule::qdisc_param, mark);
        None
    }

    fn match_stmt(&mut self) -> Option<Match> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("match") {
            let mut fields = Vec::new();
            loop {
                let before = self.pos;
                if self.sp()
                    && let Some(f) = self.match_field()
                {
                    fields.push(f);
                    continue;
                }
                self.pos = before;
                break;
            }
            if !fields.is_empty() {
                fields.shrink_to_fit();
                return Some(Match { fields });
            }
        }
        self.pos = start;
        self.t.fail(Rule::match_stmt, mark);
        None
    }

    fn match_field(&mut self) -> Option<MatchField> {
        let start = self.pos;
        if self.kw("tcp") || self.kw("udp") || self.kw("icmp") {
            return Some(MatchField::Proto(self.text(start)));
        }
        self.t.fail_at(Rule::proto, start);
        if self.kw("pods") {
            return Some(MatchField::Pods(self.span(start)));
        }
        self.t.fail_at(Rule::pods_field, start);
        if let Some(f) = self.pod_field() {
            return Some(f);
        }
        if let Some(f) = self.dir_field(Rule::addr_field) {
            return Some(f);
        }
        if let Some(f) = self.dir_field(Rule::port_field) {
            return Some(f);
        }
        self.bad_field()
    }

    fn addr_dir(&mut self) -> Option<Spanned<AddrDir>> {
        let (src, span) = self.either(Rule::addr_dir, "src", "dst")?;
        let d = if src { AddrDir::Src } else { AddrDir::Dst };
        Some(Spanned::new(d, span))
    }

    fn pod_field(&mut self) -> Option<MatchField> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("pod")
            && self.sp()
            && let Some(dir) = self.addr_dir()
            && self.sp()
            && let Some(items) = self.list()
        {
            let dir = Spanned::new(dir.node, Span::new(start, dir.span.end));
            return Some(MatchField::PodAddr(dir, items));
        }
        self.pos = start;
        self.t.fail(Rule::pod_field, mark);
        None
    }

    /// `addr_field` or `port_field`: a direction word and a list.
    fn dir_field(&mut self, rule: Rule) -> Option<MatchField> {
        let start = self.pos;
        let mark = self.t.enter(start);
        let field = if rule == Rule::addr_field {
            self.addr_dir().and_then(|dir| {
                if !self.sp() {
                    return None;
                }
                Some(MatchField::Addr(dir, self.list()?))
            })
        } else {
            self.either(Rule::port_dir, "sport", "dport")
                .and_then(|(sport, span)| {
                    if !self.sp() {
                        return None;
                    }
                    let d = if sport {
                        PortDir::Sport
                    } else {
                        PortDir::Dport
                    };
                    Some(MatchField::Port(Spanned::new(d, span), self.list()?))
                })
        };
        if field.is_none() {
            self.pos = start;
            self.t.fail(rule, mark);
        }
        field
    }

    fn bad_field(&mut self) -> Option<MatchField> {
        let start = self.pos;
        const CLASS_KEYWORDS: [&str; 11] = [
            "rate", "ceil", "prio", "burst", "cburst", "quantum", "qdisc", "id", "match",
            "default", "class",
        ];
        let keyword = CLASS_KEYWORDS.iter().any(|k| {
            let hit = self.kw(k);
            self.pos = start;
            hit
        });
        if !keyword && self.run(is_token) {
            return Some(MatchField::Bad(self.text(start)));
        }
        self.t.fail_at(Rule::bad_field, start);
        None
    }

    // ------------------------------------------------------------------ pods

    fn pods(&mut self) -> Option<Pods> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("pods") {
            self.osp();
            if let Some(stmts) = self.body(Rule::pods_body, Self::pods_stmt) {
                let span = self.span(start);
                return Some(Pods {
                    stmts,
                    span,
                    head: keyword_span_of(span, "pods"),
                });
            }
        }
        self.pos = start;
        self.t.fail(Rule::pods, mark);
        None
    }

    fn pods_stmt(&mut self) -> Option<PodsStmt> {
        let start = self.pos;
        let kind = if let Some(k) = self.cni_stmt() {
            k
        } else if let Some(k) = self.cidr_stmt() {
            k
        } else if let Some(k) = self.overlay_stmt() {
            k
        } else if let Some(s) = self.scalar_stmt(Rule::pod_burst_stmt, "burst") {
            PodsStmtKind::Burst(s)
        } else if let Some(l) = self.limit_stmt() {
            PodsStmtKind::Limit(l)
        } else {
            PodsStmtKind::Unknown(self.unknown()?)
        };
        let span = self.span(start);
        let keyword = match &kind {
            PodsStmtKind::Cni(_) | PodsStmtKind::CniFile(_) => keyword_span_of(span, "cni"),
            PodsStmtKind::Limit(_) => keyword_span_of(span, "limit"),
            PodsStmtKind::Cidr(_) => keyword_span_of(span, "cidr"),
            PodsStmtKind::Overlay(..) => keyword_span_of(span, "overlay"),
            PodsStmtKind::Burst(_) => keyword_span_of(span, "burst"),
            PodsStmtKind::Unknown(u) => u.word.span,
        };
        Some(PodsStmt {
            kind,
            span,
            keyword,
        })
    }

    fn cni_stmt(&mut self) -> Option<PodsStmtKind> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("cni") && self.sp() {
            if let Some(s) = self.cni_file() {
                return Some(PodsStmtKind::CniFile(s));
            }
            if let Some(flavour) = self.ident() {
                return Some(PodsStmtKind::Cni(flavour));
            }
        }
        self.pos = start;
        self.t.fail(Rule::cni_stmt, mark);
        None
    }

    fn cni_file(&mut self) -> Option<Scalar> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("file") && self.sp() {
            if let Some(s) = self.string() {
                return Some(Scalar::Str(s));
            }
            if let Some(v) = self.var_ref() {
                return Some(Scalar::Var(v));
            }
        }
        self.pos = start;
        self.t.fail(Rule::cni_file, mark);
        None
    }

    fn cidr_stmt(&mut self) -> Option<PodsStmtKind> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("cidr")
            && self.sp()
            && let Some(items) = self.list()
        {
            return Some(PodsStmtKind::Cidr(items));
        }
        self.pos = start;
        self.t.fail(Rule::cidr_stmt, mark);
        None
    }

    fn overlay_stmt(&mut self) -> Option<PodsStmtKind> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("overlay")
            && self.sp()
            && let Some(kind) = self.ident()
        {
            let before = self.pos;
            let mut port = None;
            if self.sp() {
                port = self.scalar();
            }
            if port.is_none() {
                self.pos = before;
            }
            return Some(PodsStmtKind::Overlay(kind, port));
        }
        self.pos = start;
        self.t.fail(Rule::overlay_stmt, mark);
        None
    }

    fn limit_stmt(&mut self) -> Option<Limit> {
        let start = self.pos;
        let mark = self.t.enter(start);
        if self.kw("limit")
            && self.sp()
            && let Some(selector) = self.token(Rule::selector, is_token)
        {
            let mut rates = Vec::new();
            loop {
                let before = self.pos;
                if self.sp()
                    && let Some((ingress, span)) = self.either(Rule::limit_dir, "ingress", "egress")
                    && self.sp()
                    && let Some(rate) = self.scalar()
                {
                    let d = if ingress {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    };
                    rates.push((Spanned::new(d, span), rate));
                    continue;
                }
                self.pos = before;
                break;
            }
            return Some(Limit { selector, rates });
        }
        self.pos = start;
        self.t.fail(Rule::limit_stmt, mark);
        None
    }

    // ------------------------------------------------------------------ recovery

    fn unknown(&mut self) -> Option<Unknown> {
        let start = self.pos;
        let mark = self.t.enter(start);
        let Some(word) = self.token(Rule::unknown_word, is_token) else {
            self.t.fail(Rule::unknown, mark);
            return None;
        };
        self.run(|c| !matches!(c, b'\n' | b'{' | b'}' | b'#'));
        let has_block = self.unknown_block();
        let text = self.src[start..self.pos].trim_end().to_string();
        Some(Unknown {
            word,
            text,
            has_block,
            span: self.span(start),
        })
    }

    /// `unknown_block`: balanced braces, comments skipped (strings are not special).
    fn unknown_block(&mut self) -> bool {
        let start = self.pos;
        if self.peek() == b'{' && self.too_deep.is_none() {
            let outer = self.depth;
            let mut i = start;
            while i < self.b.len() {
                match self.b[i] {
                    b'{' => {
                        self.pos = i;
                        if !self.open() {
                            self.depth = outer;
                            self.pos = start;
                            return false;
                        }
                    }
                    b'}' => {
                        self.depth -= 1;
                        if self.depth == outer {
                            self.pos = i + 1;
                            return true;
                        }
                    }
                    b'#' => {
                        i = memchr_nl(&self.b[i..]).map_or(self.b.len(), |n| i + n);
                        continue;
                    }
                    _ => {}
                }
                i += 1;
            }
            self.depth = outer;
        }
        self.pos = start;
        self.t.fail_at(Rule::unknown_block, start);
        false
    }
}

/// The offset of the first newline.
#[inline]
fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;

    #[test]
    fn parses_the_brief_example_shape() {
        let src = "netqos 1\nlet cp = { 10.0.0.10, 10.0.0.11 }\ninterface $up {\n rate 1gbit\n class a { rate 1mbit  ceil 2mbit  match src 10.42.3.0/24 }\n class b { rate 1mbit default }\n}\npods {\n cni rke2-flannel\n limit app=x egress 50mbit\n}\n";
        let f = parse(src).expect("parses");
        assert_eq!(f, super::super::reference::parse(src).expect("pest parses"));
        assert_eq!(f.header.as_ref().map(|h| h.node.as_str()), Some("1"));
        assert_eq!(f.items.len(), 3);
        let Item::Interface(i) = &f.items[1] else {
            panic!("interface expected")
        };
        assert_eq!(i.stmts.len(), 3);
        let StmtKind::Class(a) = &i.stmts[1].kind else {
            panic!("class expected")
        };
        assert_eq!(a.stmts.len(), 3);
    }

    #[test]
    fn misspelt_keyword_is_an_unknown_statement() {
        let f = parse("netqos 1\ninterface eth0 {\n  cieling 1gbit\n}\n").expect("parses");
        let Item::Interface(i) = &f.items[0] else {
            panic!()
        };
        assert!(matches!(&i.stmts[0].kind, StmtKind::Unknown(u) if u.word.node == "cieling"));
    }

    #[test]
    fn syntax_errors_are_the_grammars() {
        for src in [
            "netqos 1\ninterface eth0 {\n rate 1gbit\n",
            "}",
            "",
            "interface eth0 {\n class a {\n match src { 1, 2 \n }\n}\n",
            "let x = { a, }\n}",
            "pods {\n limit app=web ingress\n",
            "netqos 1\n{",
        ] {
            let fast = parse(src);
            assert_eq!(fast, super::super::reference::parse(src), "{src:?}");
            if let Err(e) = fast {
                assert_eq!(e.code, Code::NQ040);
            }
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_nq040_not_a_crash() {
        let src = format!("a {}", "{".repeat(MAX_DEPTH + 1));
        let e = parse(&src).unwrap_err();
        assert_eq!(e.code, Code::NQ040);
        assert!(e.message.contains("too deeply"), "{}", e.message);
    }
}
