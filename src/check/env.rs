//! Variables and values: `let` bindings, external overrides, and reading a written value
//! into the items it stands for (a variable may hold a set).

use std::collections::BTreeMap;

use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::span::Span;
use crate::syntax::ast::{Let, Scalar, Value};
use crate::vars::{ExtValue, ExternalVars};

/// One value token after variables are substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub text: String,
    /// Where the token is written (for external values: where the variable is used).
    pub span: Span,
    pub quoted: bool,
    /// Set when the value came through a variable.
    pub via: Option<Via>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub name: String,
    pub use_span: Span,
    /// `--var x` / `vars file f.toml` for values from outside.
    pub external: Option<String>,
}

impl Item {
    /// Labels a diagnostic at this item, pointing at the use too when it came via a variable.
    pub fn label(&self, d: Diagnostic, text: impl Into<String>) -> Diagnostic {
        let mut d = d.label(self.span, text);
        if let Some(via) = &self.via
            && via.use_span != self.span
        {
            d = d.label(via.use_span, format!("`${}` used here", via.name));
        }
        d
    }

    /// ` (from --var x)` for values given outside the file, else empty.
    pub fn origin_note(&self) -> String {
        match self.via.as_ref().and_then(|v| v.external.as_ref()) {
            Some(o) => format!(" (from {o})"),
            None => String::new(),
        }
    }
}

/// A `let` value is resolved on first use, so lets may refer to each other in any order.
enum State {
    Pending(Value),
    InProgress,
    /// `None` when resolving failed (already reported).
    Resolved(Option<Vec<Item>>),
}

struct Binding {
    state: State,
    is_set: bool,
    let_span: Option<Span>,
    name_span: Option<Span>,
    external: bool,
    used: bool,
}

/// Given variables the policy does not use are listed one by one up to this many.
pub const MAX_UNUSED_GIVEN: usize = 10;

/// All variables visible in a policy.
pub struct Env {
    bindings: BTreeMap<String, Binding>,
}

impl Env {
    /// Binds external values and the `let`s (external values win over `let` defaults).
    pub fn new(lets: &[&Let], vars: &ExternalVars, diags: &mut Diagnostics) -> Env {
        let mut env = Env {
            bindings: BTreeMap::new(),
        };
        for v in vars.effective() {
            let (items, is_set) = match &v.value {
                ExtValue::Scalar(s) => (vec![s.clone()], false),
                ExtValue::Set(items) => (items.clone(), true),
            };
            let items = items
                .into_iter()
                .map(|text| Item {
                    text,
                    span: Span::default(),
                    quoted: false,
                    via: Some(Via {
                        name: v.name.clone(),
                        use_span: Span::default(),
                        external: Some(v.origin.clone()),
                    }),
                })
                .collect();
            env.bindings.insert(
                v.name.clone(),
                Binding {
                    state: State::Resolved(Some(items)),
                    is_set,
                    let_span: None,
                    name_span: None,
                    external: true,
                    used: false,
                },
            );
        }
        for l in lets {
            env.bind_let(l, diags);
        }
        env
    }

    fn bind_let(&mut self, l: &Let, diags: &mut Diagnostics) {
        let name = &l.name.node;
        if let Some(b) = self.bindings.get_mut(name) {
            if let Some(prev) = b.name_span {
                diags.push(
                    Diagnostic::new(Code::NQ056, format!("variable `{name}` is defined twice"))
                        .label(l.name.span, "defined again here")
                        .label(prev, "first defined here")
                        .help(format!(
                            "remove one of the `let {name}` lines or rename one"
                        )),
                );
                return;
            }
            if b.external {
                // Overridden from outside: the file's value is only a default.
                b.let_span = Some(l.span);
                b.name_span = Some(l.name.span);
                return;
            }
        }
        self.bindings.insert(
            name.clone(),
            Binding {
                is_set: matches!(l.value, Value::Set(..)),
                state: State::Pending(l.value.clone()),
                let_span: Some(l.span),
                name_span: Some(l.name.span),
                external: false,
                used: false,
            },
        );
    }

    /// The items a value stands for; sets and set variables are flattened.
    /// `None` when a variable is undefined (already reported).
    pub fn items_of_value(&mut self, v: &Value, diags: &mut Diagnostics) -> Option<Vec<Item>> {
        match v {
            Value::Scalar(s) => self.items_of_scalar(s, diags).map(|(items, _)| items),
            Value::Set(scalars, span) => {
                if scalars.is_empty() {
                    diags.push(
                        Diagnostic::new(Code::NQ048, "empty set `{ }`")
                            .label(*span, "this set holds nothing")
                            .help("list at least one value, or remove what uses it"),
                    );
                    return None;
                }
                let mut out = Vec::new();
                let mut ok = true;
                for s in scalars {
                    match self.items_of_scalar(s, diags) {
                        Some((items, _)) => out.extend(items),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
        }
    }

    /// Resolves a binding's value (once), reporting a `let` that refers to itself.
    fn resolve(
        &mut self,
        name: &str,
        use_span: Span,
        diags: &mut Diagnostics,
    ) -> Option<Vec<Item>> {
        let b = self.bindings.get_mut(name)?;
        let state = std::mem::replace(&mut b.state, State::InProgress);
        match state {
            State::Resolved(items) => {
                let out = items.clone();
                if let Some(b) = self.bindings.get_mut(name) {
                    b.state = State::Resolved(items);
                }
                out
            }
            State::InProgress => {
                diags.push(
                    Diagnostic::new(
                        Code::NQ043,
                        format!("variable `${name}` is defined in terms of itself"),
                    )
                    .label(use_span, "refers back to its own definition")
                    .help("give the variable a value that does not depend on itself"),
                );
                None
            }
            State::Pending(value) => {
                let items = self.items_of_value(&value, diags);
                if let Some(b) = self.bindings.get_mut(name) {
                    b.state = State::Resolved(items.clone());
                }
                items
            }
        }
    }

    /// The items of one scalar and whether it is a set variable.
    fn items_of_scalar(
        &mut self,
        s: &Scalar,
        diags: &mut Diagnostics,
    ) -> Option<(Vec<Item>, bool)> {
        match s {
            Scalar::Atom(a) => Some((vec![plain(&a.node, a.span, false)], false)),
            Scalar::Str(a) => Some((vec![plain(&a.node, a.span, true)], false)),
            Scalar::Var(name) => {
                let Some(b) = self.bindings.get_mut(&name.node) else {
                    diags.push(undefined(&name.node, name.span, self.names()));
                    return None;
                };
                b.used = true;
                let is_set = b.is_set;
                let resolved = self.resolve(&name.node, name.span, diags)?;
                if resolved.is_empty() {
                    diags.push(
                        Diagnostic::new(
                            Code::NQ048,
                            format!("variable `{}` is an empty set", name.node),
                        )
                        .label(name.span, "used here")
                        .help("give it at least one value"),
                    );
                    return None;
                }
                let items = resolved
                    .into_iter()
                    .map(|mut i| {
                        match &mut i.via {
                            Some(via) if via.external.is_some() => {
                                via.use_span = name.span;
                                i.span = name.span;
                            }
                            _ => {
                                i.via = Some(Via {
                                    name: name.node.clone(),
                                    use_span: name.span,
                                    external: None,
                                });
                            }
                        }
                        i
                    })
                    .collect();
                Some((items, is_set))
            }
        }
    }

    fn names(&self) -> Vec<String> {
        self.bindings.keys().cloned().collect()
    }

    /// Exactly one item: a set where one value is expected is NQ057.
    pub fn one(&mut self, s: &Scalar, what: &str, diags: &mut Diagnostics) -> Option<Item> {
        let (mut items, is_set) = self.items_of_scalar(s, diags)?;
        if is_set || items.len() != 1 {
            let name = match s {
                Scalar::Var(n) => format!("`${}`", n.node),
                _ => "this value".to_string(),
            };
            diags.push(
                Diagnostic::new(
                    Code::NQ057,
                    format!(
                        "{name} is a set of {} values where one {what} is expected",
                        items.len()
                    ),
                )
                .label(s.span(), format!("expected one {what}"))
                .help(format!("use a variable that holds a single {what}")),
            );
            return None;
        }
        items.pop()
    }

    /// Warnings for variables defined or given but never used; more than
    /// [`MAX_UNUSED_GIVEN`] given ones are one NQ045 naming the first few.
    pub fn unused(&self) -> Vec<Diagnostic> {
        let (mut given, mut out): (Vec<_>, Vec<_>) = self
            .unused_each()
            .into_iter()
            .partition(|d| d.code == Code::NQ045);
        if given.len() > MAX_UNUSED_GIVEN {
            let names: Vec<String> = self
                .bindings
                .iter()
                .filter(|(_, b)| b.external && !b.used && b.let_span.is_none())
                .map(|(n, _)| format!("`{n}`"))
                .collect();
            given = vec![
                Diagnostic::new(
                    Code::NQ045,
                    format!(
                        "{} variables are given but the policy never uses them: {}, … and {} more",
                        names.len(),
                        names[..5].join(", "),
                        names.len() - 5
                    ),
                )
                .help(
                    "pass only the variables this policy uses (a vars file per policy), or \
                     check their spelling against the policy's variables",
                ),
            ];
        }
        out.append(&mut given);
        out
    }

    fn unused_each(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (name, b) in &self.bindings {
            if b.used {
                continue;
            }
            if let (Some(span), Some(_)) = (b.name_span, b.let_span) {
                out.push(
                    Diagnostic::new(Code::NQ044, format!("variable `{name}` is never used"))
                        .label(span, "defined here")
                        .help(format!("remove `let {name}`, or use it as `${name}`")),
                );
            } else if b.external {
                let first = match &b.state {
                    State::Resolved(Some(items)) => items.first(),
                    _ => None,
                };
                let origin = first
                    .and_then(|i| i.via.as_ref())
                    .and_then(|v| v.external.clone())
                    .unwrap_or_else(|| "outside".to_string());
                out.push(
                    Diagnostic::new(
                        Code::NQ045,
                        format!("variable `{name}` is given ({origin}) but the policy never uses it"),
                    )
                    .help(format!(
                        "remove it, or check its spelling against the policy's variables; the policy would use it as `${name}`"
                    )),
                );
            }
        }
        out
    }
}

fn plain(text: &str, span: Span, quoted: bool) -> Item {
    Item {
        text: text.to_string(),
        span,
        quoted,
        via: None,
    }
}

fn undefined(name: &str, span: Span, known: Vec<String>) -> Diagnostic {
    let refs: Vec<&str> = known.iter().map(String::as_str).collect();
    let mut help = format!("define it with `let {name} = …` or pass `--var {name}=VALUE`");
    if let Some(c) = super::suggest::closest(name, &refs) {
        help = format!("did you mean `${c}`? otherwise {help}");
    }
    Diagnostic::new(Code::NQ043, format!("variable `${name}` is not defined"))
        .label(span, "used here but never given a value")
        .help(help)
}
