//! Where a parse failed and what it expected there, computed the way pest computes it, so
//! the hand-written reader reports the same NQ040 as the grammar (`grammar/netqos.pest`).
//!
//! pest remembers the furthest position at which a rule *started* and failed, and the rules
//! that failed there; a failing rule replaces the attempts its children made at its own
//! start unless exactly one child failed there (then the child is the better word). Rules
//! inside an atomic (`@`) rule are not tracked, and a rule that succeeds never is. The
//! reader calls [`Tracker::enter`] where a tracked rule starts and [`Tracker::fail`] when
//! it fails, nothing else: the cost is a compare on the success path.

/// The grammar rules the reader tracks (the non-silent rules of `netqos.pest`).
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    EOI,
    file,
    header,
    version,
    allow_stmt,
    allow_code,
    let_stmt,
    set,
    string,
    var_ref,
    atom,
    ident,
    interface,
    bare_name,
    direction,
    if_body,
    rate_stmt,
    ceil_stmt,
    prio_stmt,
    burst_stmt,
    cburst_stmt,
    quantum_stmt,
    r2q_stmt,
    mtu_stmt,
    id_stmt,
    ifb_stmt,
    default_ref,
    default_flag,
    class,
    class_body,
    qdisc_stmt,
    qdisc_param,
    match_stmt,
    proto,
    addr_field,
    pods_field,
    pod_field,
    addr_dir,
    port_field,
    port_dir,
    list,
    bad_field,
    pods,
    pods_body,
    cidr_stmt,
    overlay_stmt,
    cni_stmt,
    cni_file,
    pod_burst_stmt,
    limit_stmt,
    selector,
    limit_dir,
    unknown,
    unknown_word,
    unknown_block,
}

/// How the NQ040 message names what a rule would have read.
pub(crate) fn rule_words(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::ident => "a name",
        Rule::atom | Rule::list => "a value",
        Rule::string => "a quoted string",
        Rule::var_ref => "a `$variable`",
        Rule::set => "a set `{ … }`",
        Rule::if_body | Rule::class_body | Rule::pods_body => "`{`",
        Rule::selector => "a pod selector like `app=web`",
        Rule::bare_name => "an interface name",
        Rule::version => "a version number",
        Rule::proto | Rule::addr_field | Rule::port_field => "a match field",
        Rule::limit_dir | Rule::direction => "`ingress` or `egress`",
        _ => "a statement or `}`",
    }
}

/// A tracked rule's start: its position and the attempts already recorded there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pos: usize,
    before: usize,
}

/// The furthest failure so far and the rules that failed there.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) pos: usize,
    pub(crate) rules: Vec<Rule>,
}

impl Tracker {
    #[inline]
    pub(crate) fn enter(&self, pos: usize) -> Mark {
        let before = if pos == self.pos { self.rules.len() } else { 0 };
        Mark { pos, before }
    }

    /// The rule that started at `mark` failed.
    #[inline]
    pub(crate) fn fail(&mut self, rule: Rule, mark: Mark) {
        let Mark { pos, before } = mark;
        if pos < self.pos {
            return;
        }
        if pos == self.pos {
            let now = self.rules.len();
            if now > before && now - before == 1 {
                return;
            }
            self.rules.truncate(before);
        } else {
            self.rules.clear();
            self.pos = pos;
        }
        self.rules.push(rule);
    }

    /// A rule that failed at `pos` without trying any tracked rule.
    #[inline]
    pub(crate) fn fail_at(&mut self, rule: Rule, pos: usize) {
        let mark = self.enter(pos);
        self.fail(rule, mark);
    }
}
