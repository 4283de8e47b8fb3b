//! Backends: plan → artefacts. Logic lives here; the minijinja templates only lay out
//! values, and every dynamic shell token passes through the `shq` quoting filter.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

mod artefact;
mod cloud_init;
pub mod nft;
mod script;
mod svg;
mod systemd;
mod tree;

pub use artefact::{Artefact, Body, Info, OutFile, Render, RenderError, Scripts};
pub use cloud_init::{NodeFile, cloud_config};
use script::Chunks;
pub use script::Script;
pub use svg::{svg, write_svg};
pub use systemd::{
    AGENT_UNIT_NAME, AGENT_UNIT_PATH, APPLY_PATH, BINARY_PATH, INSTALL_DIR, POLICY_PATH,
    ROLLBACK_PATH, UNIT_NAME, UNIT_PATH, agent_unit, device_unit, unit,
};
pub use tree::{tree, write_tree};

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
    /// `batch` and `filter_text` as written: the template gets them as values (a
    /// `--templates` one) or as marks they are spliced in for.
    #[serde(skip)]
    parts: (Chunks, Chunks),
}

impl DeviceView {
    /// Bytes of the text the apply script writes from it, about.
    fn text_len(&self) -> usize {
        self.batch.len()
            + self.filter_text.len()
            + self.keep.len()
            + self.leaves.len()
            + self.root_add.len()
            + self.root_keep.len()
            + self.redirect.len()
            + 512
    }
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

/// The text of the apply script's big values: every device's batch lines and u32 filters
/// and the policy line of each, written straight into their buffers (a 100,000-class tree
/// has hundreds of thousands of lines); for a `--templates` template also as lists.
struct Lines<'a> {
    source: &'a str,
    /// The batch lines of the current device (classes and leaf queues), each ended by a
    /// newline.
    batch: Chunks,
    /// Its hash tables and u32 filters, each ended by a newline.
    filters: Chunks,
    /// The line map of every device so far.
    map: Chunks,
    /// `Some` for a template from `--templates`: the same lines one by one.
    lists: Option<Lists>,
}

#[derive(Default)]
struct Lists {
    lines: Vec<String>,
    filters: Vec<String>,
    map: Vec<String>,
}

impl Lines<'_> {
    /// Ends the line just written to `batch` (or `filters`) at `start` and maps it to the
    /// policy line `line`, described by `what` (written by `what_of`).
    fn end(
        &mut self,
        filter: bool,
        start: usize,
        line: usize,
        shaped: &str,
        what: fmt::Arguments<'_>,
    ) {
        let buf = if filter {
            &mut self.filters
        } else {
            &mut self.batch
        };
        if let Some(lists) = &mut self.lists {
            let text = buf.last()[start..].to_string();
            if filter {
                lists.filters.push(text);
            } else {
                lists.lines.push(text);
            }
        }
        buf.last().push('\n');
        let source = self.source;
        self.map_line(format_args!("{source}:{line} ({what} on {shaped})"));
    }

    fn map_line(&mut self, text: fmt::Arguments<'_>) {
        let start = self.map.line_start();
        let _ = self.map.write_fmt(text);
        if let Some(lists) = &mut self.lists {
            lists.map.push(self.map.last()[start..].to_string());
        }
        self.map.last().push('\n');
    }

    /// The batch lines of one device (after its root line) with their policy lines.
    fn device(&mut self, d: &DevicePlan) {
        let dev = &d.shaped_device;
        for c in &d.classes {
            let start = self.batch.line_start();
            let _ = write!(
                self.batch,
                "class replace dev {dev} parent {} classid {} htb rate {}bit ceil {}bit burst {}b cburst {}b prio {}",
                c.parent, c.classid, c.rate, c.ceil, c.burst, c.cburst, c.prio
            );
            if let Some(q) = c.quantum {
                let _ = write!(self.batch, " quantum {q}");
            }
            let name = ClassName(&c.name);
            self.end(false, start, c.line, dev, format_args!("{name}"));
            if let Some(leaf) = &c.leaf {
                let start = self.batch.line_start();
                let _ = write!(
                    self.batch,
                    "qdisc replace dev {dev} parent {} handle {} {}",
                    c.classid,
                    leaf.handle,
                    leaf.queue.kind()
                );
                for a in &leaf.queue.args() {
                    self.batch.last().push(' ');
                    self.batch.last().push_str(a);
                }
                self.end(false, start, c.line, dev, format_args!("{name} leaf queue"));
            }
        }
        for t in &d.hash_tables {
            let start = self.filters.line_start();
            let _ = write!(
                self.filters,
                "filter add dev {dev} parent {} protocol {} prio {} handle {} u32 divisor {}",
                t.parent, t.protocol, t.prio, t.handle, t.divisor
            );
            self.end(
                true,
                start,
                t.line,
                dev,
                format_args!("hash table {}", t.handle),
            );
        }
        for f in &d.filters {
            let start = self.filters.line_start();
            write_filter(self.filters.last(), dev, f);
            match f.action {
                FilterAction::Class { target } => {
                    self.end(true, start, f.line, dev, format_args!("match → {target}"));
                }
                FilterAction::Link { link, .. } => {
                    let what = format_args!("match run → hash table {link}");
                    self.end(true, start, f.line, dev, what);
                }
            }
        }
    }
}

/// How the line map names a class: `root class` for 1:1, else `class PATH`.
struct ClassName<'a>(&'a str);

impl fmt::Display for ClassName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("root class")
        } else {
            write!(f, "class {}", self.0)
        }
    }
}

/// One u32 node as a batch line: `ht 2:7b:` for a node in a hash table, `hashkey … link
/// 3:` for a link node.
fn write_filter(l: &mut String, dev: &str, f: &FilterPlan) {
    let _ = write!(
        l,
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
    apply_script(ctx).map(Script::into_string)
}

/// [`tc_script`] as a [`Script`]: with the built-in template, the batches, filters and the
/// line map go through the template as short marks and are spliced in after (a mark that
/// does not come out exactly once makes it render them as values, like a `--templates`
/// template always does).
pub fn apply_script(ctx: &Render<'_>) -> Result<Script, minijinja::Error> {
    let env = env(ctx.templates)?;
    let source = &display_name(ctx.source);
    let user_template = ctx.templates.apply.is_some();
    let mut lines = Lines {
        source,
        batch: Chunks::default(),
        filters: Chunks::default(),
        map: Chunks::default(),
        lists: user_template.then(Lists::default),
    };
    let mut views: Vec<DeviceView> = ctx
        .plan
        .devices
        .iter()
        .map(|d| device_view(d, &mut lines))
        .collect();
    let Lines {
        map: map_text,
        lists,
        ..
    } = lines;
    let map = lists.map_or_else(Vec::new, |l| l.map);
    let mut required: Vec<String> = ctx.plan.devices.iter().map(|d| d.device.clone()).collect();
    required.sort();
    required.dedup();
    let template = env.get_template("apply")?;
    let render = |views: &[DeviceView], map_text: &str| {
        // About the size of the values it holds, in one allocation.
        let size: usize = views.iter().map(DeviceView::text_len).sum::<usize>()
            + map_text.len()
            + template.source().len() * 2
            + 4096;
        let mut out = Vec::with_capacity(size + size / 8);
        template.render_captured_to(
            context! {
                source => source,
                devices => minijinja::Value::from(minijinja::value::Serde(views)),
                required => &required,
                map => &map,
                map_text => map_text,
                redirect_prio => REDIRECT_PRIO,
                cni => ctx.cni.map(|c| minijinja::Value::from(minijinja::value::Serde(c))),
                nft => ctx.plan.pod_rules.as_ref().map(|p| context! {
                    table => p.table.clone(),
                    ruleset => nft::replace(p),
                }),
                nft_table => crate::lower::pods::TABLE,
            },
            &mut out,
        )?;
        String::from_utf8(out).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })
    };
    if user_template {
        with_values(&mut views);
        return Ok(Script::whole(with_newline(render(
            &views,
            &map_text.concat(),
        )?)));
    }
    spliced(views, map_text, &render)
}

/// Gives each view its batch and filters as values.
fn with_values(views: &mut [DeviceView]) {
    for v in views {
        v.batch = v.parts.0.concat();
        v.filter_text = v.parts.1.concat();
    }
}

/// The apply template rendered with these device views and line map.
type RenderApply<'a> = dyn Fn(&[DeviceView], &str) -> Result<String, minijinja::Error> + 'a;

/// Renders the built-in apply template with each device's batch and filters and the line
/// map as marks, then splices them in; if a mark does not come out exactly once, renders
/// them as values after all.
fn spliced(
    mut views: Vec<DeviceView>,
    map_text: Chunks,
    render: &RenderApply<'_>,
) -> Result<Script, minijinja::Error> {
    let mark = |n: usize| format!("\u{0}netqos piece {n}\u{0}");
    let (mut marks, mut pieces) = (Vec::new(), Vec::new());
    for v in &mut views {
        let (batch, filters) = std::mem::take(&mut v.parts);
        for (value, piece) in [(&mut v.batch, batch), (&mut v.filter_text, filters)] {
            *value = mark(marks.len());
            marks.push(value.clone());
            pieces.push(piece);
        }
    }
    marks.push(mark(marks.len()));
    pieces.push(map_text);
    let text = render(&views, &marks[marks.len() - 1])?;
    let mut back = match Script::splice(&text, &marks, pieces) {
        Ok(script) => return Ok(script),
        Err(pieces) => pieces,
    };
    // A mark that did not come out exactly once (only a changed built-in template could do
    // that): the values themselves.
    let map_text = back.pop().unwrap_or_default();
    for (v, pair) in views.iter_mut().zip(back.chunks_exact_mut(2)) {
        v.parts = (std::mem::take(&mut pair[0]), std::mem::take(&mut pair[1]));
    }
    with_values(&mut views);
    Ok(Script::whole(with_newline(render(
        &views,
        &map_text.concat(),
    )?)))
}

/// One device of the apply script; its lines and their policy lines go to `lines`.
fn device_view(d: &DevicePlan, lines: &mut Lines<'_>) -> DeviceView {
    let title = format!("{} {}", d.device, d.direction.as_str());
    let source = lines.source;
    lines.map_line(format_args!("{source}:{} (root of {title})", d.line));
    lines.device(d);
    let parts = (
        std::mem::take(&mut lines.batch),
        std::mem::take(&mut lines.filters),
    );
    let (list, filters) = lines.lists.as_mut().map_or_else(Default::default, |l| {
        (std::mem::take(&mut l.lines), std::mem::take(&mut l.filters))
    });
    let redirect = d.ifb.as_ref().map_or(String::new(), |ifb| {
        lines.map_line(format_args!(
            "{source}:{} (redirect of {} ingress to {ifb})",
            d.line, d.device
        ));
        format!(
            "filter add dev {} ingress protocol all prio {REDIRECT_PRIO} u32 match u32 0 0 action mirred egress redirect dev {ifb}",
            d.device
        )
    });
    let mut keep = String::with_capacity(d.classes.len() * 8);
    for (n, c) in d.classes.iter().enumerate() {
        if n > 0 {
            keep.push(' ');
        }
        let _ = write!(keep, "{}", c.classid);
    }
    let mut leaves = String::new();
    for l in d.classes.iter().filter_map(|c| c.leaf.as_ref()) {
        if !leaves.is_empty() {
            leaves.push(' ');
        }
        let _ = write!(leaves, "{}{}", l.handle, l.queue.kind());
    }
    DeviceView {
        title,
        device: d.device.clone(),
        shaped: d.shaped_device.clone(),
        ifb: d.ifb.clone(),
        default: d.root.default.to_string(),
        line: d.line,
        root_add: fmt_root(d, "add"),
        root_keep: format!("qdisc show dev {}", d.shaped_device),
        keep,
        leaves,
        batch: String::new(),
        filter_text: String::new(),
        lines: list,
        filters,
        redirect,
        redirect_mark: d
            .ifb
            .as_ref()
            .map_or(String::new(), |ifb| format!("Redirect to device {ifb})")),
        parts,
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

/// The `cloud-init` document for the rendered scripts `apply` and `rollback`, written to
/// `w`.
pub(crate) fn write_cloud_init(
    ctx: &Render<'_>,
    apply: &Script,
    rollback: &str,
    w: &mut dyn std::io::Write,
) -> Result<(), RenderError> {
    let unit = unit(ctx.plan, ctx.source)?;
    let files = [
        cloud_init::FileRef {
            path: APPLY_PATH,
            mode: 0o755,
            content: apply.chunks().collect(),
        },
        cloud_init::FileRef {
            path: ROLLBACK_PATH,
            mode: 0o755,
            content: vec![rollback],
        },
        cloud_init::FileRef {
            path: UNIT_PATH,
            mode: 0o644,
            content: vec![&unit],
        },
    ];
    Ok(cloud_init::write_cloud_config(&files, ctx.source, w)?)
}

/// The plan as pretty JSON (schema `netqos-plan/1`).
#[must_use]
pub fn plan_json(plan: &Plan) -> String {
    let mut out = Vec::new();
    match write_plan_json(plan, &mut out) {
        Ok(()) => String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Err(e) => format!("{{\"error\": \"{e}\"}}\n"),
    }
}

/// [`plan_json`] written to `w` as it is serialized.
pub fn write_plan_json(plan: &Plan, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    // serde_json writes token by token: buffered here, not through the dynamic writer.
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    serde_json::to_writer_pretty(&mut w, plan)?;
    w.write_all(b"\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples and the repository's good policies, checked and lowered.
    fn plans() -> Vec<(String, Plan)> {
        let mut files: Vec<std::path::PathBuf> = ["examples", "tests/fixtures/check/good"]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
            .filter(|p| p.extension().is_some_and(|e| e == "nq"))
            .collect();
        files.sort();
        let vars = crate::vars::ExternalVars::default();
        let plans: Vec<(String, Plan)> = files
            .iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                let checked = crate::pipeline::check(&text, &vars, &[], false).ok()?;
                Some((f.display().to_string(), checked.plan))
            })
            .collect();
        assert!(plans.len() >= 5, "{}", plans.len());
        plans
    }

    #[test]
    fn the_spliced_apply_script_is_the_one_the_template_renders_with_the_values() {
        // The same template text given as a `--templates` override renders every value
        // through the engine; the built-in path splices the big ones in.
        let builtin = Templates::default();
        let as_values = Templates {
            apply: Some(APPLY_TEMPLATE.to_string()),
            rollback: None,
        };
        // And one whose batch, filters and line map run over many 64 KiB parts.
        let big = crate::testing::host_policy("10gbit", &[3000], &crate::testing::host);
        let vars = crate::vars::ExternalVars::default();
        let big = crate::pipeline::check(&big, &vars, &[], false)
            .unwrap()
            .plan;
        for (name, plan) in plans().into_iter().chain([("3000 classes".into(), big)]) {
            let spliced = apply_script(&Render::new(&plan, "p.nq", &builtin)).unwrap();
            assert!(!spliced.is_whole(), "{name}");
            let whole = apply_script(&Render::new(&plan, "p.nq", &as_values)).unwrap();
            assert!(whole.is_whole());
            let parts = spliced.chunks().count();
            let len = spliced.len();
            let mut written = Vec::new();
            spliced.write_to(&mut written).unwrap();
            let text = spliced.into_string();
            assert_eq!(text, whole.into_string(), "{name}");
            assert_eq!((len, written), (text.len(), text.into_bytes()), "{name}");
            if name == "3000 classes" {
                assert!(parts > 10, "{parts}");
            }
        }
    }

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
