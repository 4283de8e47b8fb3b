//! Backends: plan → artefacts. Logic lives here; the minijinja templates only lay out
//! values, and every dynamic shell token passes through the `shq` quoting filter.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

mod artefact;
mod cloud_init;
pub mod nft;
mod svg;
mod systemd;
mod tree;

pub use artefact::{Artefact, Info, OutFile, Render, RenderError};
pub use cloud_init::{NodeFile, cloud_config};
pub use svg::svg;
pub use systemd::{
    AGENT_UNIT_NAME, AGENT_UNIT_PATH, APPLY_PATH, BINARY_PATH, INSTALL_DIR, POLICY_PATH,
    ROLLBACK_PATH, UNIT_NAME, UNIT_PATH, agent_unit, device_unit, unit,
};
pub use tree::tree;

use minijinja::{Environment, context};
use serde::Serialize;

use crate::plan::{DevicePlan, FilterAction, FilterPlan, Plan};

/// The u32 priority of netqos's redirect filter on an ingress qdisc. Not 49152 and below,
/// which the kernel hands out to filters added without a priority.
pub const REDIRECT_PRIO: u16 = 65261;

const APPLY_TEMPLATE: &str = include_str!("templates/apply.sh.j2");
const ROLLBACK_TEMPLATE: &str = include_str!("templates/rollback.sh.j2");
/// The locks both scripts take (`{% include "locks" %}`; overridden templates may too).
const LOCKS_TEMPLATE: &str = include_str!("templates/locks.sh.j2");

/// Templates, built in or overridden from a directory (`--templates DIR`).
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub apply: Option<String>,
    pub rollback: Option<String>,
}

/// Quotes a word for POSIX sh: safe whatever it holds.
#[must_use]
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@=+,".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The environment of the two scripts' templates, compiled once per process: the built-in
/// templates in one shared environment, a `--templates` set in one kept until a different
/// set is asked for (keyed by the templates' text, so a changed override is never stale). A
/// template that does not compile is not kept: every render reports it again.
fn env(templates: &Templates) -> Result<Arc<Environment<'static>>, minijinja::Error> {
    if templates.apply.is_none() && templates.rollback.is_none() {
        return builtin_env();
    }
    type Slot = Option<(Templates, Arc<Environment<'static>>)>;
    static OVERRIDDEN: Mutex<Slot> = Mutex::new(None);
    let mut slot = OVERRIDDEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((key, env)) = slot.as_ref()
        && key.apply == templates.apply
        && key.rollback == templates.rollback
    {
        return Ok(Arc::clone(env));
    }
    let env = Arc::new(build_env(
        templates
            .apply
            .clone()
            .map_or(Cow::Borrowed(APPLY_TEMPLATE), Cow::Owned),
        templates
            .rollback
            .clone()
            .map_or(Cow::Borrowed(ROLLBACK_TEMPLATE), Cow::Owned),
    )?);
    *slot = Some((templates.clone(), Arc::clone(&env)));
    Ok(env)
}

/// The built-in templates' environment, built on first use.
fn builtin_env() -> Result<Arc<Environment<'static>>, minijinja::Error> {
    static BUILTIN: OnceLock<Result<Arc<Environment<'static>>, String>> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            build_env(
                Cow::Borrowed(APPLY_TEMPLATE),
                Cow::Borrowed(ROLLBACK_TEMPLATE),
            )
            .map(Arc::new)
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
}

fn build_env(
    apply: Cow<'static, str>,
    rollback: Cow<'static, str>,
) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("shq", |v: String| shell_quote(&v));
    env.add_template_owned("apply", apply)?;
    env.add_template_owned("rollback", rollback)?;
    env.add_template("locks", LOCKS_TEMPLATE)?;
    Ok(env)
}

#[derive(Serialize)]
struct DeviceView {
    title: String,
    device: String,
    shaped: String,
    ifb: Option<String>,
    default: String,
    line: usize,
    root_add: String,
    root_keep: String,
    /// Class ids the plan has, space separated.
    keep: String,
    /// Leaf queues as `HANDLE:KIND`, space separated.
    leaves: String,
    /// Classes and leaf queues (for a `--templates` apply script; the built-in one reads
    /// `batch`).
    lines: Vec<String>,
    /// The u32 filters, after `lines` in the batch (a re-run keeps them when the kernel
    /// holds exactly what the script installed last); the built-in template reads
    /// `filter_text`.
    filters: Vec<String>,
    /// `lines`, each ended by a newline: a 100,000-class tree's batch is written as one
    /// value, not looped over line by line in the template.
    batch: String,
    /// `filters`, each ended by a newline.
    filter_text: String,
    redirect: String,
    /// Text `tc filter show` prints for netqos's redirect, to recognise it.
    redirect_mark: String,
}

fn fmt_root(d: &DevicePlan, verb: &str) -> String {
    let mut s = format!(
        "qdisc {verb} dev {} root handle 1: htb default {} direct_qlen {}",
        d.shaped_device, d.root.default, d.root.direct_qlen
    );
    if let Some(r) = d.root.r2q {
        let _ = write!(s, " r2q {r}");
    }
    s
}

/// The batch lines of one device (after its root line) with their policy lines.
fn device_lines(d: &DevicePlan) -> Vec<(String, usize, String)> {
    let dev = &d.shaped_device;
    let mut out = Vec::new();
    for c in &d.classes {
        let mut l = format!(
            "class replace dev {dev} parent {} classid {} htb rate {}bit ceil {}bit burst {}b cburst {}b prio {}",
            c.parent, c.classid, c.rate, c.ceil, c.burst, c.cburst, c.prio
        );
        if let Some(q) = c.quantum {
            let _ = write!(l, " quantum {q}");
        }
        let what = if c.name.is_empty() {
            "root class".to_string()
        } else {
            format!("class {}", c.name)
        };
        out.push((l, c.line, what.clone()));
        if let Some(leaf) = &c.leaf {
            let mut l = format!(
                "qdisc replace dev {dev} parent {} handle {} {}",
                c.classid,
                leaf.handle,
                leaf.queue.kind()
            );
            for a in &leaf.queue.args() {
                l.push(' ');
                l.push_str(a);
            }
            out.push((l, c.line, format!("{what} leaf queue")));
        }
    }
    for t in &d.hash_tables {
        let l = format!(
            "filter add dev {dev} parent {} protocol {} prio {} handle {} u32 divisor {}",
            t.parent, t.protocol, t.prio, t.handle, t.divisor
        );
        out.push((l, t.line, format!("hash table {}", t.handle)));
    }
    for f in &d.filters {
        out.push((filter_line(dev, f), f.line, filter_what(f)));
    }
    out
}

/// One u32 node as a batch line: `ht 2:7b:` for a node in a hash table, `hashkey … link
/// 3:` for a link node.
fn filter_line(dev: &str, f: &FilterPlan) -> String {
    let mut l = format!(
        "filter add dev {dev} parent {} protocol {} prio {} u32",
        f.parent, f.protocol, f.prio
    );
    if let Some(ht) = f.ht {
        let _ = write!(l, " ht {ht}");
    }
    for k in &f.keys {
        let _ = write!(l, " match {k}");
    }
    match f.action {
        FilterAction::Class { target } => {
            let _ = write!(l, " flowid {target}");
        }
        FilterAction::Link { link, hashkey } => {
            let _ = write!(l, " hashkey {hashkey} link {link}");
        }
    }
    l
}

fn filter_what(f: &FilterPlan) -> String {
    match f.action {
        FilterAction::Class { target } => format!("match → {target}"),
        FilterAction::Link { link, .. } => format!("match run → hash table {link}"),
    }
}

/// The policy's name as it may appear in comments and heredocs: control characters become
/// `?`, so a file name holding a newline cannot end a comment or a heredoc early.
fn display_name(source: &str) -> String {
    source
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The patched CNI conflist the scripts install and restore.
#[derive(Debug, Clone, Serialize)]
pub struct CniInstall {
    /// Where the conflist lives on the node (`NETQOS_CNI_CONF` overrides it at run time).
    pub path: String,
    /// The exact text the patch was computed from: the scripts only replace that.
    pub original: String,
    pub patched: String,
    /// Computed from the node's own file (`--conflist`): a different file on the node stops
    /// the apply script before it changes anything. Otherwise (a flavour's default) it is
    /// skipped with a warning.
    pub strict: bool,
    /// The patched conflist names the netqos plugin: the script refuses to install it
    /// unless an executable `netqos` is in this CNI bin dir (`NETQOS_CNI_BIN_DIR` overrides
    /// it; `NETQOS_INSTALL_PLUGIN=PATH` copies the binary there first).
    pub plugin_dir: Option<String>,
}

/// The apply script for the whole node; it also installs the patched CNI conflist when
/// `ctx.cni` is given.
pub fn tc_script(ctx: &Render<'_>) -> Result<String, minijinja::Error> {
    let env = env(ctx.templates)?;
    let source = &display_name(ctx.source);
    let mut map = Vec::new();
    let lists = ctx.templates.apply.is_some();
    let views: Vec<DeviceView> = ctx
        .plan
        .devices
        .iter()
        .map(|d| device_view(d, source, &mut map, lists))
        .collect();
    let map_text = joined(&map);
    if !lists {
        map = Vec::new();
    }
    let mut required: Vec<String> = ctx.plan.devices.iter().map(|d| d.device.clone()).collect();
    required.sort();
    required.dedup();
    let out = env.get_template("apply")?.render(context! {
        source => source,
        devices => minijinja::Value::from(minijinja::value::Serde(&views)),
        required => required,
        map => map,
        map_text => map_text,
        redirect_prio => REDIRECT_PRIO,
        cni => ctx.cni.map(|c| minijinja::Value::from(minijinja::value::Serde(c))),
        nft => ctx.plan.pod_rules.as_ref().map(|p| context! {
            table => p.table.clone(),
            ruleset => nft::replace(p),
        }),
        nft_table => crate::lower::pods::TABLE,
    })?;
    Ok(with_newline(out))
}

/// Each item followed by a newline.
fn joined(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum());
    for i in items {
        out.push_str(i);
        out.push('\n');
    }
    out
}

/// One device of the apply script; its batch lines' policy lines go to `map`. `lists`:
/// the lines as lists too (a template from `--templates` may loop over them).
fn device_view(d: &DevicePlan, source: &str, map: &mut Vec<String>, lists: bool) -> DeviceView {
    let title = format!("{} {}", d.device, d.direction.as_str());
    map.push(format!("{source}:{} (root of {title})", d.line));
    let mut lines = Vec::new();
    let mut filters = Vec::new();
    for (l, line, what) in device_lines(d) {
        map.push(format!("{source}:{line} ({what} on {})", d.shaped_device));
        if l.starts_with("filter ") {
            filters.push(l);
        } else {
            lines.push(l);
        }
    }
    let redirect = d.ifb.as_ref().map_or(String::new(), |ifb| {
        map.push(format!("{source}:{} (redirect of {} ingress to {ifb})", d.line, d.device));
        format!(
            "filter add dev {} ingress protocol all prio {REDIRECT_PRIO} u32 match u32 0 0 action mirred egress redirect dev {ifb}",
            d.device
        )
    });
    let join = |items: Vec<String>| items.join(" ");
    DeviceView {
        title,
        device: d.device.clone(),
        shaped: d.shaped_device.clone(),
        ifb: d.ifb.clone(),
        default: d.root.default.to_string(),
        line: d.line,
        root_add: fmt_root(d, "add"),
        root_keep: format!("qdisc show dev {}", d.shaped_device),
        keep: join(d.classes.iter().map(|c| c.classid.to_string()).collect()),
        leaves: join(
            d.classes
                .iter()
                .filter_map(|c| {
                    c.leaf
                        .as_ref()
                        .map(|l| format!("{}{}", l.handle, l.queue.kind()))
                })
                .collect(),
        ),
        batch: joined(&lines),
        filter_text: joined(&filters),
        lines: if lists { lines } else { Vec::new() },
        filters: if lists { filters } else { Vec::new() },
        redirect,
        redirect_mark: d
            .ifb
            .as_ref()
            .map_or(String::new(), |ifb| format!("Redirect to device {ifb})")),
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The rollback script; it also restores the conflist backup when `ctx.cni` is given.
pub fn rollback_script(ctx: &Render<'_>) -> Result<String, minijinja::Error> {
    #[derive(Serialize)]
    struct Ingress {
        device: String,
        ifb: String,
        mark: String,
    }
    let env = env(ctx.templates)?;
    let source = &display_name(ctx.source);
    let devices = || ctx.plan.devices.iter().rev();
    let ingress: Vec<Ingress> = devices()
        .filter_map(|d| {
            d.ifb.as_ref().map(|ifb| Ingress {
                device: d.device.clone(),
                ifb: ifb.clone(),
                mark: format!("Redirect to device {ifb})"),
            })
        })
        .collect();
    let egress: Vec<String> = devices()
        .filter(|d| d.ifb.is_none())
        .map(|d| d.shaped_device.clone())
        .collect();
    let out = env.get_template("rollback")?.render(context! {
        source => source,
        ingress => minijinja::Value::from(minijinja::value::Serde(&ingress)),
        egress => egress,
        redirect_prio => REDIRECT_PRIO,
        cni => ctx.cni.map(|c| minijinja::Value::from(minijinja::value::Serde(c))),
        nft_table => crate::lower::pods::TABLE,
    })?;
    Ok(with_newline(out))
}

/// The files a node needs, at their installed paths: the apply and rollback scripts (with
/// the conflist change of `ctx.cni`) and the systemd unit that runs them. The `cloud-init`
/// artefact writes these.
pub fn node_files(ctx: &Render<'_>) -> Result<Vec<NodeFile>, minijinja::Error> {
    node_files_with(ctx, tc_script(ctx)?, rollback_script(ctx)?)
}

/// [`node_files`] with the apply script rendered already.
fn node_files_with(
    ctx: &Render<'_>,
    apply: String,
    rollback: String,
) -> Result<Vec<NodeFile>, minijinja::Error> {
    Ok(vec![
        NodeFile {
            path: APPLY_PATH.to_string(),
            mode: 0o755,
            content: apply,
        },
        NodeFile {
            path: ROLLBACK_PATH.to_string(),
            mode: 0o755,
            content: rollback,
        },
        NodeFile {
            path: UNIT_PATH.to_string(),
            mode: 0o644,
            content: unit(ctx.plan, ctx.source)?,
        },
    ])
}

/// The `cloud-init` artefact's file; `apply` is the apply script when it was rendered
/// already (it is the first of the node's files).
pub fn cloud_init_file(
    ctx: &Render<'_>,
    apply: Option<String>,
    rollback: Option<String>,
) -> Result<Vec<OutFile>, RenderError> {
    let apply = match apply {
        Some(text) => text,
        None => tc_script(ctx)?,
    };
    let rollback = match rollback {
        Some(text) => text,
        None => rollback_script(ctx)?,
    };
    let files = node_files_with(ctx, apply, rollback)?;
    let kind = Artefact::CloudInit;
    let text = cloud_config(&files, ctx.source)?;
    Ok(vec![OutFile::new(kind, kind.info().file_name, text)])
}

/// The plan as pretty JSON (schema `netqos-plan/1`).
#[must_use]
pub fn plan_json(plan: &Plan) -> String {
    let mut s =
        serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("eth0"), "eth0");
        assert_eq!(shell_quote("a;id"), "'a;id'");
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn script_templates_compile_once_and_an_override_is_never_stale() {
        let builtin = Templates::default();
        assert!(Arc::ptr_eq(
            &env(&builtin).unwrap(),
            &env(&builtin).unwrap()
        ));
        let render = |t: &Templates| {
            env(t)
                .unwrap()
                .get_template("apply")
                .unwrap()
                .render(context! { source => "p.nq" })
                .unwrap()
        };
        let a = Templates {
            apply: Some("A {{ source }}".into()),
            rollback: None,
        };
        assert!(Arc::ptr_eq(&env(&a).unwrap(), &env(&a.clone()).unwrap()));
        assert_eq!(render(&a), "A p.nq");
        let b = Templates {
            apply: Some("B {{ source }}".into()),
            rollback: None,
        };
        assert_eq!(render(&b), "B p.nq");
        assert_eq!(render(&a), "A p.nq");
        let broken = Templates {
            apply: None,
            rollback: Some("{% if".into()),
        };
        assert!(env(&broken).is_err());
        assert!(env(&broken).is_err(), "a failed build is not kept");
        let builtin = env(&builtin).unwrap();
        assert_eq!(
            builtin.get_template("apply").unwrap().source(),
            APPLY_TEMPLATE
        );
        assert!(builtin.get_template("locks").is_ok());
    }
}
