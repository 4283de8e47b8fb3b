//! The syntax tree of a policy file: what was written, where, before any meaning is given.

use crate::span::{Span, Spanned};

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// `netqos N`, if present.
    pub header: Option<Spanned<String>>,
    pub items: Vec<Item>,
}

/// A top-level statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Let(Let),
    Allow(Allow),
    Interface(Interface),
    Pods(Pods),
    Unknown(Unknown),
}

impl Item {
    #[must_use]
    pub fn span(&self) -> Span {
        match self {
            Item::Let(l) => l.span,
            Item::Allow(a) => a.span,
            Item::Interface(i) => i.span,
            Item::Pods(p) => p.span,
            Item::Unknown(u) => u.span,
        }
    }
}

/// `allow CODE, …`: accepted warnings and infos.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    pub codes: Vec<Spanned<String>>,
    pub span: Span,
}

/// `let NAME = VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    pub name: Spanned<String>,
    pub value: Value,
    pub span: Span,
}

/// A value as written: one scalar or a set of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Set(Vec<Scalar>, Span),
}

impl Value {
    #[must_use]
    pub fn span(&self) -> Span {
        match self {
            Value::Scalar(s) => s.span(),
            Value::Set(_, span) => *span,
        }
    }
}

/// One value token.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A bare token such as `200mbit`, `10.0.0.0/8`, `2379-2380`.
    Atom(Spanned<String>),
    /// A double-quoted string (span includes the quotes).
    Str(Spanned<String>),
    /// `$name` (the node holds the name without `$`).
    Var(Spanned<String>),
}

impl Scalar {
    #[must_use]
    pub fn span(&self) -> Span {
        match self {
            Scalar::Atom(s) | Scalar::Str(s) | Scalar::Var(s) => s.span,
        }
    }
}

/// Which way the shaped traffic flows through the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// `interface NAME [ingress|egress] { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub name: Scalar,
    pub direction: Option<Spanned<Direction>>,
    pub stmts: Vec<Stmt>,
    pub span: Span,
    /// The span of `interface NAME [direction]`, for labels.
    pub head: Span,
}

/// `class NAME { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: Spanned<String>,
    pub stmts: Vec<Stmt>,
    pub span: Span,
    /// The span of `class NAME`, for labels.
    pub head: Span,
}

/// A statement inside an interface or class block.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    /// The whole statement.
    pub span: Span,
    /// The keyword.
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    Rate(Scalar),
    Ceil(Scalar),
    Prio(Scalar),
    Burst(Scalar),
    Cburst(Scalar),
    Quantum(Scalar),
    R2q(Scalar),
    Mtu(Scalar),
    Id(Scalar),
    Ifb(Scalar),
    /// `default NAME|ID` (interface level).
    DefaultRef(Scalar),
    /// `default` (class level).
    DefaultFlag,
    /// Boxed, like `Class` and `Unknown`: a statement is the size of a scalar one, so the
    /// tree of 100,000 classes is not four times the size of its `rate` lines.
    Qdisc(Box<Qdisc>),
    Match(Match),
    Class(Box<Class>),
    Unknown(Box<Unknown>),
}

impl StmtKind {
    /// The keyword as written in the language.
    #[must_use]
    pub fn keyword(&self) -> &str {
        match self {
            StmtKind::Rate(_) => "rate",
            StmtKind::Ceil(_) => "ceil",
            StmtKind::Prio(_) => "prio",
            StmtKind::Burst(_) => "burst",
            StmtKind::Cburst(_) => "cburst",
            StmtKind::Quantum(_) => "quantum",
            StmtKind::R2q(_) => "r2q",
            StmtKind::Mtu(_) => "mtu",
            StmtKind::Id(_) => "id",
            StmtKind::Ifb(_) => "ifb",
            StmtKind::DefaultRef(_) | StmtKind::DefaultFlag => "default",
            StmtKind::Qdisc(_) => "qdisc",
            StmtKind::Match(_) => "match",
            StmtKind::Class(_) => "class",
            StmtKind::Unknown(u) => &u.word.node,
        }
    }
}

/// `qdisc KIND [PARAM VALUE]…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Qdisc {
    pub kind: Spanned<String>,
    pub params: Vec<(Spanned<String>, Scalar)>,
}

/// One `match` line: the fields are AND-ed.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub fields: Vec<MatchField>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchField {
    Proto(Spanned<String>),
    /// `src`/`dst` with its list of items.
    Addr(Spanned<AddrDir>, Vec<Value>),
    /// `sport`/`dport` with its list of items.
    Port(Spanned<PortDir>, Vec<Value>),
    /// `pods` (the span of the keyword).
    Pods(Span),
    /// `pod src|dst` with its list of items; the span covers `pod src`.
    PodAddr(Spanned<AddrDir>, Vec<Value>),
    /// Something that is not a match field.
    Bad(Spanned<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrDir {
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortDir {
    Sport,
    Dport,
}

impl AddrDir {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AddrDir::Src => "src",
            AddrDir::Dst => "dst",
        }
    }
}

impl PortDir {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PortDir::Sport => "sport",
            PortDir::Dport => "dport",
        }
    }
}

/// `pods { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pods {
    pub stmts: Vec<PodsStmt>,
    pub span: Span,
    pub head: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodsStmt {
    pub kind: PodsStmtKind,
    pub span: Span,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PodsStmtKind {
    /// `cni FLAVOUR`.
    Cni(Spanned<String>),
    /// `cni file "PATH"`.
    CniFile(Scalar),
    /// `burst DURATION|SIZE`: the bucket of every pod limit.
    Burst(Scalar),
    /// `limit SELECTOR [ingress RATE] [egress RATE]`.
    Limit(Limit),
    /// `cidr ADDRESSES`: the pod network.
    Cidr(Vec<Value>),
    /// `overlay KIND [PORT]`.
    Overlay(Spanned<String>, Option<Scalar>),
    Unknown(Unknown),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub selector: Spanned<String>,
    pub rates: Vec<(Spanned<Direction>, Scalar)>,
}

/// A statement netqos does not recognise.
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown {
    pub word: Spanned<String>,
    /// The raw text of the whole statement, for `fmt`.
    pub text: String,
    /// Whether a braced block followed.
    pub has_block: bool,
    pub span: Span,
}
