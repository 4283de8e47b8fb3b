//! The oracle: `grammar/netqos.pest` run by pest, its pairs built into the same syntax tree
//! and its failures into the same NQ040 as [`super::parse`]. Not used to read policies
//! (pest takes 4-40x the reader's time, BENCHMARKS.md "Parser"): `tests/parse_diff.rs`
//! and the `parse_diff` fuzz target compare the two, and the build checks that the
//! normative grammar still compiles. One function per grammar rule, named after it.

use pest::Parser;
use pest::iterators::Pair;

use super::ast::*;
use super::error;
use crate::diagnostic::Diagnostic;
use crate::span::{Span, Spanned};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/netqos.pest"]
struct PolicyParser;

/// Parses a policy with pest. On a syntax error returns the NQ040 diagnostic instead of a
/// tree; past pest's stack limit, NQ040 "nests blocks too deeply".
pub fn parse(src: &str) -> Result<File, Diagnostic> {
    let mut pairs = PolicyParser::parse(Rule::file, src).map_err(|e| syntax_error(src, &e))?;
    let file = pairs.next().map_or(
        File {
            header: None,
            items: Vec::new(),
        },
        file,
    );
    Ok(file)
}

fn syntax_error(src: &str, e: &pest::error::Error<Rule>) -> Diagnostic {
    let at = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&'static str> = positives.iter().map(|r| rule_words(*r)).collect();
            error::syntax_error(src, at, &mut words)
        }
        pest::error::ErrorVariant::CustomError { .. } => error::too_deep(src, at),
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
        .map_or_else(|| Value::Set(Vec::new(), span), value);
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
            .map_or_else(|| Scalar::Atom(Spanned::new(String::new(), span)), scalar)
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
        Rule::qdisc_stmt => StmtKind::Qdisc(Box::new(qdisc_stmt(pair))),
        Rule::match_stmt => StmtKind::Match(match_stmt(pair)),
        Rule::class => {
            let c = class(pair);
            return Stmt {
                keyword: keyword_span_of(c.span, "class"),
                kind: StmtKind::Class(Box::new(c)),
                span,
            };
        }
        _ => StmtKind::Unknown(Box::new(unknown(pair))),
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
                .map_or_else(|| Scalar::Atom(Spanned::new(String::new(), pspan)), scalar);
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
        Rule::pods_field => MatchField::Pods(sp(&pair)),
        Rule::pod_field => {
            let start = sp(&pair).start;
            let mut inner = pair.into_inner();
            let dir = inner
                .next()
                .map_or(Spanned::new(AddrDir::Src, Span::default()), |d| {
                    let v = if d.as_str() == "src" {
                        AddrDir::Src
                    } else {
                        AddrDir::Dst
                    };
                    Spanned::new(v, Span::new(start, sp(&d).end))
                });
            MatchField::PodAddr(dir, inner.next().map(list).unwrap_or_default())
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
                        .map_or_else(|| Scalar::Str(Spanned::new(String::new(), span)), scalar);
                    PodsStmtKind::CniFile(s)
                }
                Some(p) => PodsStmtKind::Cni(spanned(&p)),
                None => PodsStmtKind::Cni(Spanned::new(String::new(), span)),
            }
        }
        Rule::limit_stmt => PodsStmtKind::Limit(limit_stmt(pair)),
        Rule::cidr_stmt => {
            PodsStmtKind::Cidr(pair.into_inner().next().map(list).unwrap_or_default())
        }
        Rule::overlay_stmt => {
            let mut inner = pair.into_inner();
            let kind = inner
                .next()
                .map(|p| spanned(&p))
                .unwrap_or_default_spanned(span);
            PodsStmtKind::Overlay(kind, inner.next().map(scalar))
        }
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
        PodsStmtKind::Cidr(_) => keyword_span_of(span, "cidr"),
        PodsStmtKind::Overlay(..) => keyword_span_of(span, "overlay"),
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
    use crate::codes::Code;

    #[test]
    fn unclosed_block_is_nq040() {
        let e = parse("netqos 1\ninterface eth0 {\n rate 1gbit\n").unwrap_err();
        assert_eq!(e.code, Code::NQ040);
    }
}
