//! Builds the syntax tree from pest's pairs. One function per grammar rule, named after it.
//!
//! `parse` never fails outright: a file pest cannot read yields NQ040, and statements it
//! can only read as `unknown` are returned in the tree (the checker reports them as NQ041
//! with the keywords valid at that place).

use pest::Parser;
use pest::iterators::Pair;

use super::ast::*;
use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::span::{Span, Spanned};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/netqos.pest"]
struct PolicyParser;

/// Parses a policy. On a syntax error returns the NQ040 diagnostic instead of a tree.
pub fn parse(src: &str) -> Result<File, Diagnostic> {
    let mut pairs = PolicyParser::parse(Rule::file, src).map_err(|e| syntax_error(src, &e))?;
    let file = pairs.next().map(file).unwrap_or(File {
        header: None,
        items: Vec::new(),
    });
    Ok(file)
}

fn syntax_error(src: &str, e: &pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let found = src[start.min(src.len())..]
        .chars()
        .next()
        .map_or("end of file".to_string(), |c| match c {
            '\n' => "end of line".to_string(),
            c => format!("`{c}`"),
        });
    let expected = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe_expected(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let end = if end == start {
        (start
            + src[start.min(src.len())..]
                .chars()
                .next()
                .map_or(0, char::len_utf8))
        .min(src.len())
    } else {
        end
    };
    if expected.contains("stack limit") || expected.contains("call limit") {
        return Diagnostic::new(Code::NQ040, "the policy nests blocks too deeply to read")
            .label(Span::new(start, end), "nesting too deep")
            .help("HTB allows 8 levels; flatten the class hierarchy");
    }
    let mut d = Diagnostic::new(
        Code::NQ040,
        format!("syntax error: found {found}, expected {expected}"),
    );
    let at_end = start >= src.trim_end().len();
    match unclosed_brace(src).filter(|_| at_end) {
        Some(open) => {
            d = d
                .label(Span::new(open, open + 1), "this block is never closed")
                .label(Span::new(start, end), format!("expected {expected}"));
        }
        None => d = d.label(Span::new(start, end), format!("expected {expected}")),
    }
    d.help(syntax_help(src, start))
}

/// The innermost `{` left open at the end of the file (outside comments and strings).
fn unclosed_brace(src: &str) -> Option<usize> {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut in_comment = false;
    for (i, c) in src.char_indices() {
        match c {
            '\n' => {
                in_string = false;
                in_comment = false;
            }
            _ if in_comment => {}
            '"' => in_string = !in_string,
            '#' if !in_string => in_comment = true,
            '{' if !in_string => stack.push(i),
            '}' if !in_string => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack.pop()
}

fn describe_expected(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = rules.iter().map(|r| rule_words(*r)).collect();
    words.sort_unstable();
    words.dedup();
    match words.as_slice() {
        [] => "a statement".to_string(),
        [one] => (*one).to_string(),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&"", &[]));
            format!("{} or {last}", rest.join(", "))
        }
    }
}

fn rule_words(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::ident => "a name",
        Rule::atom | Rule::scalar | Rule::value | Rule::list | Rule::list_item => "a value",
        Rule::string | Rule::string_inner => "a quoted string",
        Rule::var_ref => "a `$variable`",
        Rule::set => "a set `{ … }`",
        Rule::if_body | Rule::class_body | Rule::pods_body => "`{`",
        Rule::selector => "a pod selector like `app=web`",
        Rule::bare_name | Rule::if_name => "an interface name",
        Rule::version => "a version number",
        Rule::match_field | Rule::proto | Rule::addr_field | Rule::port_field => "a match field",
        Rule::limit_dir | Rule::direction => "`ingress` or `egress`",
        _ => "a statement or `}`",
    }
}

fn syntax_help(src: &str, at: usize) -> String {
    let before = &src[..at.min(src.len())];
    let open = before.matches('{').count();
    let close = before.matches('}').count();
    if at >= src.len() && open > close {
        "a block is not closed: add the missing `}`".to_string()
    } else if src[at.min(src.len())..].starts_with('}') && close >= open {
        "this `}` closes no block: remove it".to_string()
    } else {
        "each statement is a keyword and its values on one line; see `man 5 netqos`".to_string()
    }
}

fn sp(pair: &Pair<'_, Rule>) -> Span {
    pair.as_span().into()
}

fn spanned(pair: &Pair<'_, Rule>) -> Spanned<String> {
    Spanned::new(pair.as_str().to_string(), sp(pair))
}

fn file(pair: Pair<'_, Rule>) -> File {
    let mut header = None;
    let mut items = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::header => {
                let version = p.into_inner().next().map(|v| spanned(&v));
                header = version;
            }
            Rule::let_stmt => items.push(Item::Let(let_stmt(p))),
            Rule::allow_stmt => {
                let span = sp(&p);
                let codes = p.into_inner().map(|c| spanned(&c)).collect();
                items.push(Item::Allow(Allow { codes, span }));
            }
            Rule::interface => items.push(Item::Interface(interface(p))),
            Rule::pods => items.push(Item::Pods(pods(p))),
            Rule::unknown => items.push(Item::Unknown(unknown(p))),
            _ => {}
        }
    }
    File { header, items }
}

fn let_stmt(pair: Pair<'_, Rule>) -> Let {
    let span = sp(&pair);
    let mut inner = pair.into_inner();
    let name = inner
        .next()
        .map(|p| spanned(&p))
        .unwrap_or_default_spanned(span);
    let value = inner
        .next()
        .map(value)
        .unwrap_or_else(|| Value::Set(Vec::new(), span));
    Let { name, value, span }
}

trait OrDefaultSpanned {
    fn unwrap_or_default_spanned(self, span: Span) -> Spanned<String>;
}

impl OrDefaultSpanned for Option<Spanned<String>> {
    fn unwrap_or_default_spanned(self, span: Span) -> Spanned<String> {
        self.unwrap_or_else(|| Spanned::new(String::new(), span))
    }
}

fn value(pair: Pair<'_, Rule>) -> Value {
    match pair.as_rule() {
        Rule::set => {
            let span = sp(&pair);
            Value::Set(pair.into_inner().map(scalar).collect(), span)
        }
        _ => Value::Scalar(scalar(pair)),
    }
}

fn scalar(pair: Pair<'_, Rule>) -> Scalar {
    let span = sp(&pair);
    match pair.as_rule() {
        Rule::string => {
            let text = pair
                .into_inner()
                .next()
                .map_or(String::new(), |p| p.as_str().to_string());
            Scalar::Str(Spanned::new(text, span))
        }
        Rule::var_ref => {
            let name = pair
                .into_inner()
                .next()
                .map_or(String::new(), |p| p.as_str().to_string());
            Scalar::Var(Spanned::new(name, span))
        }
        _ => Scalar::Atom(Spanned::new(pair.as_str().to_string(), span)),
    }
}

fn interface(pair: Pair<'_, Rule>) -> Interface {
    let span = sp(&pair);
    let mut name = Scalar::Atom(Spanned::new(String::new(), span));
    let mut direction = None;
    let mut stmts = Vec::new();
    let mut head_end = span.start;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::var_ref | Rule::string => {
                head_end = p.as_span().end();
                name = scalar(p);
            }
            Rule::bare_name => {
                head_end = p.as_span().end();
                name = Scalar::Atom(spanned(&p));
            }
            Rule::direction => {
                head_end = p.as_span().end();
                let d = if p.as_str() == "ingress" {
                    Direction::Ingress
                } else {
                    Direction::Egress
                };
                direction = Some(Spanned::new(d, sp(&p)));
            }
            Rule::if_body => stmts = p.into_inner().map(stmt).collect(),
            _ => {}
        }
    }
    Interface {
        name,
        direction,
        stmts,
        span,
        head: Span::new(span.start, head_end),
    }
}

fn class(pair: Pair<'_, Rule>) -> Class {
    let span = sp(&pair);
    let mut name = Spanned::new(String::new(), span);
    let mut stmts = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::ident => name = spanned(&p),
            Rule::class_body => stmts = p.into_inner().map(stmt).collect(),
            _ => {}
        }
    }
    let head = Span::new(span.start, name.span.end);
    Class {
        name,
        stmts,
        span,
        head,
    }
}

fn stmt(pair: Pair<'_, Rule>) -> Stmt {
    let span = sp(&pair);
    let rule = pair.as_rule();
    let text = pair.as_str();
    let kw_len = text
        .find(|c: char| c.is_whitespace() || c == '{')
        .unwrap_or(text.len());
    let keyword = Span::new(span.start, span.start + kw_len);
    let first_scalar = |pair: Pair<'_, Rule>| {
        pair.into_inner()
            .next()
            .map(scalar)
            .unwrap_or_else(|| Scalar::Atom(Spanned::new(String::new(), span)))
    };
    let kind = match rule {
        Rule::rate_stmt => StmtKind::Rate(first_scalar(pair)),
        Rule::ceil_stmt => StmtKind::Ceil(first_scalar(pair)),
        Rule::prio_stmt => StmtKind::Prio(first_scalar(pair)),
        Rule::burst_stmt => StmtKind::Burst(first_scalar(pair)),
        Rule::cburst_stmt => StmtKind::Cburst(first_scalar(pair)),
        Rule::quantum_stmt => StmtKind::Quantum(first_scalar(pair)),
        Rule::r2q_stmt => StmtKind::R2q(first_scalar(pair)),
        Rule::mtu_stmt => StmtKind::Mtu(first_scalar(pair)),
        Rule::id_stmt => StmtKind::Id(first_scalar(pair)),
        Rule::ifb_stmt => StmtKind::Ifb(first_scalar(pair)),
        Rule::default_ref => StmtKind::DefaultRef(first_scalar(pair)),
        Rule::default_flag => StmtKind::DefaultFlag,
        Rule::qdisc_stmt => StmtKind::Qdisc(qdisc_stmt(pair)),
        Rule::match_stmt => StmtKind::Match(match_stmt(pair)),
        Rule::class => {
            let c = class(pair);
            return Stmt {
                keyword: keyword_span_of(c.span, "class"),
                kind: StmtKind::Class(c),
                span,
            };
        }
        _ => StmtKind::Unknown(unknown(pair)),
    };
    Stmt {
        kind,
        span,
        keyword,
    }
}

fn keyword_span_of(span: Span, kw: &str) -> Span {
    Span::new(span.start, span.start + kw.len())
}

fn qdisc_stmt(pair: Pair<'_, Rule>) -> Qdisc {
    let span = sp(&pair);
    let mut inner = pair.into_inner();
    let kind = inner
        .next()
        .map(|p| spanned(&p))
        .unwrap_or_default_spanned(span);
    let params = inner
        .filter(|p| p.as_rule() == Rule::qdisc_param)
        .map(|p| {
            let pspan = sp(&p);
            let mut i = p.into_inner();
            let name = i
                .next()
                .map(|n| spanned(&n))
                .unwrap_or_default_spanned(pspan);
            let value = i
                .next()
                .map(scalar)
                .unwrap_or_else(|| Scalar::Atom(Spanned::new(String::new(), pspan)));
            (name, value)
        })
        .collect();
    Qdisc { kind, params }
}

fn match_stmt(pair: Pair<'_, Rule>) -> Match {
    let fields = pair.into_inner().map(match_field).collect();
    Match { fields }
}

fn match_field(pair: Pair<'_, Rule>) -> MatchField {
    match pair.as_rule() {
        Rule::proto => MatchField::Proto(spanned(&pair)),
        Rule::addr_field => {
            let mut inner = pair.into_inner();
            let dir_pair = inner.next();
            let dir = dir_pair
                .as_ref()
                .map_or(Spanned::new(AddrDir::Src, Span::default()), |d| {
                    let v = if d.as_str() == "src" {
                        AddrDir::Src
                    } else {
                        AddrDir::Dst
                    };
                    Spanned::new(v, sp(d))
                });
            MatchField::Addr(dir, inner.next().map(list).unwrap_or_default())
        }
        Rule::port_field => {
            let mut inner = pair.into_inner();
            let dir_pair = inner.next();
            let dir =
                dir_pair
                    .as_ref()
                    .map_or(Spanned::new(PortDir::Dport, Span::default()), |d| {
                        let v = if d.as_str() == "sport" {
                            PortDir::Sport
                        } else {
                            PortDir::Dport
                        };
                        Spanned::new(v, sp(d))
                    });
            MatchField::Port(dir, inner.next().map(list).unwrap_or_default())
        }
        _ => MatchField::Bad(spanned(&pair)),
    }
}

fn list(pair: Pair<'_, Rule>) -> Vec<Value> {
    pair.into_inner().map(value).collect()
}

fn pods(pair: Pair<'_, Rule>) -> Pods {
    let span = sp(&pair);
    let mut stmts = Vec::new();
    for p in pair.into_inner() {
        if p.as_rule() == Rule::pods_body {
            stmts = p.into_inner().map(pods_stmt).collect();
        }
    }
    Pods {
        stmts,
        span,
        head: keyword_span_of(span, "pods"),
    }
}

fn pods_stmt(pair: Pair<'_, Rule>) -> PodsStmt {
    let span = sp(&pair);
    let rule = pair.as_rule();
    let kind = match rule {
        Rule::cni_stmt => {
            let inner = pair.into_inner().next();
            match inner {
                Some(p) if p.as_rule() == Rule::cni_file => {
                    let s = p
                        .into_inner()
                        .next()
                        .map(scalar)
                        .unwrap_or_else(|| Scalar::Str(Spanned::new(String::new(), span)));
                    PodsStmtKind::CniFile(s)
                }
                Some(p) => PodsStmtKind::Cni(spanned(&p)),
                None => PodsStmtKind::Cni(Spanned::new(String::new(), span)),
            }
        }
        Rule::limit_stmt => PodsStmtKind::Limit(limit_stmt(pair)),
        Rule::pod_burst_stmt => PodsStmtKind::Burst(
            pair.into_inner()
                .next()
                .map(scalar)
                .unwrap_or_else(|| Scalar::Str(Spanned::new(String::new(), span))),
        ),
        _ => PodsStmtKind::Unknown(unknown(pair)),
    };
    let keyword = match &kind {
        PodsStmtKind::Cni(_) | PodsStmtKind::CniFile(_) => keyword_span_of(span, "cni"),
        PodsStmtKind::Limit(_) => keyword_span_of(span, "limit"),
        PodsStmtKind::Burst(_) => keyword_span_of(span, "burst"),
        PodsStmtKind::Unknown(u) => u.word.span,
    };
    PodsStmt {
        kind,
        span,
        keyword,
    }
}

fn limit_stmt(pair: Pair<'_, Rule>) -> Limit {
    let span = sp(&pair);
    let mut inner = pair.into_inner();
    let selector = inner
        .next()
        .map(|p| spanned(&p))
        .unwrap_or_default_spanned(span);
    let mut rates = Vec::new();
    while let Some(dir) = inner.next() {
        let d = if dir.as_str() == "ingress" {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let Some(v) = inner.next() else { break };
        rates.push((Spanned::new(d, sp(&dir)), scalar(v)));
    }
    Limit { selector, rates }
}

fn unknown(pair: Pair<'_, Rule>) -> Unknown {
    let span = sp(&pair);
    let text = pair.as_str().trim_end().to_string();
    let mut word = Spanned::new(String::new(), span);
    let mut has_block = false;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::unknown_word => word = spanned(&p),
            Rule::unknown_block => has_block = true,
            _ => {}
        }
    }
    Unknown {
        word,
        text,
        has_block,
        span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_brief_example_shape() {
        let src = "netqos 1\nlet cp = { 10.0.0.10, 10.0.0.11 }\ninterface $up {\n rate 1gbit\n class a { rate 1mbit  ceil 2mbit  match src 10.42.3.0/24 }\n class b { rate 1mbit default }\n}\npods {\n cni rke2-flannel\n limit app=x egress 50mbit\n}\n";
        let f = parse(src).expect("parses");
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
    fn unclosed_block_is_nq040() {
        let e = parse("netqos 1\ninterface eth0 {\n rate 1gbit\n").unwrap_err();
        assert_eq!(e.code, Code::NQ040);
    }
}
