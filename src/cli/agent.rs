//! `netqos agent FILE`: the CLI side of the agent — arguments, the state directory lock
//! (held for the agent's life: a second agent on the same state directory is refused),
//! signal handlers, the HTTP endpoint, and the `Host` the library loop calls to load the
//! policy (read, check, lower) and to apply it through the apply transaction.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::check::{external_vars_of, read_source};
use super::live::{open_kernel, state_dir};
use super::{Exit, Ui, VarArgs};
use netqos::agent::counters::Counters;
use netqos::agent::daemon::{self, Applied, Config, Host, Policy, Shared, Signals};
use netqos::agent::http::{Pages, Server};
use netqos::agent::metrics::{self, Exposition};
use netqos::agent::mirrored::Mirrored;
use netqos::apply::state_dir::StateDir;
use netqos::apply::transaction::Base;

pub struct Args<'a> {
    pub file: &'a Path,
    pub listen: SocketAddr,
    pub state_dir: Option<&'a Path>,
    pub conflist: Option<&'a Path>,
    pub vars: &'a VarArgs,
    pub resync: Duration,
    pub replace_foreign: bool,
}

/// Loads and applies for the loop.
struct CliHost<'a> {
    args: &'a Args<'a>,
    dir: StateDir,
    ui: Ui,
    /// The hash of the policy whose class names `classes.json` holds.
    saved_classes: Option<String>,
    /// An apply of a policy without pod rules left no nftables table of netqos's: later
    /// applies of such policies need not list it (two `nft` runs) again.
    nft_clean: bool,
}

fn rendered(diags: &[netqos::diagnostic::Diagnostic], src: &netqos::report::Source) -> String {
    netqos::report::human(diags, src, false)
}

impl Host for CliHost<'_> {
    fn load(&mut self, current: Option<&str>) -> Result<Option<Policy>, String> {
        let mut timings = super::timings::Timings::from_env();
        let src = read_source(self.args.file).map_err(|e| match e {
            super::input::Unreadable::Io(m) => m,
            super::input::Unreadable::Invalid(b) => {
                let (src, d) = *b;
                rendered(&[d], &src)
            }
        })?;
        let vars_text = self.read_vars()?;
        let cli_vars = self.args.vars.vars.join("\n");
        let hash = daemon::fnv1a(&[
            src.text.as_bytes(),
            vars_text.as_deref().unwrap_or_default().as_bytes(),
            cli_vars.as_bytes(),
        ]);
        timings.mark("load: read");
        if current == Some(hash.as_str()) {
            // The same bytes as the policy in force: nothing to check or lower again.
            return Ok(None);
        }
        let vars = external_vars_of(self.args.vars, vars_text.as_deref()).map_err(|(d, _)| {
            rendered(
                &d,
                &netqos::report::Source {
                    name: "<command line>".into(),
                    text: String::new(),
                },
            )
        })?;
        let checked = netqos::check_source(&src.text, &vars);
        timings.mark("load: check");
        let diags = checked.diagnostics.into_sorted();
        let Some(model) = checked.model else {
            return Err(rendered(&diags, &src));
        };
        if !diags.is_empty() && !self.ui.quiet {
            eprint!("{}", rendered(&diags, &src));
        }
        self.link_findings(&model, &src);
        let plan = netqos::lower::lower(&model);
        timings.mark("load: lower");
        let target = netqos::apply::state::from_plan(&plan).map_err(|e| e.to_string())?;
        let conflist = model
            .pods
            .as_ref()
            .and_then(|p| netqos::apply::conflist_file::path_for(p, self.args.conflist));
        let policy = Policy {
            target,
            classes: metrics::classes_of(&plan),
            pods: model.pods,
            hash,
            conflist,
            nft: netqos::apply::nft_table::NftTable::for_plan(plan.pod_rules.as_ref()),
        };
        timings.mark("load: target");
        Ok(Some(policy))
    }

    fn apply(
        &mut self,
        kernel: &mut Mirrored,
        policy: &Policy,
        base: Option<Base<'_>>,
        repair: bool,
    ) -> Applied {
        let opts = netqos::apply::diff::Options {
            replace_foreign: repair || self.args.replace_foreign,
        };
        for tree in &policy.target.trees {
            for f in &tree.filters {
                if !kernel.inner.prio_hints.contains(&f.prio) {
                    kernel.inner.prio_hints.push(f.prio);
                }
            }
        }
        let nft = policy.nft.want.is_some() || !self.nft_clean;
        let how = How {
            opts,
            base,
            nft,
            source: self.args.file.display().to_string(),
        };
        let r = transact(kernel, &self.dir, policy, how);
        if matches!(r, Applied::Applied(..) | Applied::Unchanged) {
            self.nft_clean = policy.nft.want.is_none();
        }
        r
    }

    /// The class names for `status` and `top`, once per policy, after the apply was
    /// verified and logged (a megabyte at 10,000 classes: not part of the re-apply).
    fn held(&mut self, policy: &Policy) {
        if self.saved_classes.as_ref() != Some(&policy.hash)
            && save_classes(&self.dir, &policy.classes).is_ok()
        {
            self.saved_classes = Some(policy.hash.clone());
        }
    }

    fn resource_drift(&mut self, policy: &Policy) -> Vec<&'static str> {
        use netqos::apply::conflist_file::{Prepared, prepare};
        let mut kinds = Vec::new();
        if let (Some(pods), Some(path)) = (&policy.pods, &policy.conflist)
            && matches!(prepare(pods, path), Ok(Prepared::Install { .. }))
        {
            kinds.push("conflist");
        }
        // The table is read (one `nft list`) only when the policy has pod rules; a stale
        // table of an earlier policy goes at the first apply.
        if policy.nft.want.is_some()
            && policy
                .nft
                .read()
                .map_or(true, |live| policy.nft.change(&live).is_some())
        {
            kinds.push("nftables");
        }
        kinds
    }

    fn log(&mut self, line: &str) {
        if !self.ui.quiet {
            eprintln!("netqos agent: {line}");
        }
    }
}

impl CliHost<'_> {
    /// The vars file's text, read once per load (`None`: no `--vars`).
    fn read_vars(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.args.vars.vars_file else {
            return Ok(None);
        };
        super::input::read_vars(path)
            .map(Some)
            .map_err(|e| match e {
                super::input::Unreadable::Io(m) => m,
                super::input::Unreadable::Invalid(b) => b.1.message,
            })
    }

    /// Root rates against the links' speeds (NQ100), as plan and apply warn: logged at
    /// every load, never a refusal.
    fn link_findings(&self, model: &netqos::model::Model, src: &netqos::report::Source) {
        let link = netqos::doctor::links::rate_findings(
            model,
            &src.text,
            &netqos::doctor::links::sysfs_speed,
        );
        if !link.is_empty() && !self.ui.quiet {
            eprint!("{}", rendered(&link, src));
        }
    }
}

/// The names of the applied classes, for `status --format prometheus` and `top`: written
/// atomically but not synced (display only; lost in a crash, `status` shows class ids
/// until the next apply writes them again).
pub fn save_classes(dir: &StateDir, classes: &[metrics::ClassInfo]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(classes).map_err(std::io::Error::other)?;
    let p = dir.path.join("classes.json");
    if std::fs::read(&p).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    netqos::apply::state_dir::write_renamed(&p, &bytes, false)
}

/// Keeps the class names transaction `id` replaces (`null`: there were none), for
/// `restore_classes` when it is rolled back.
pub fn keep_classes(dir: &StateDir, id: &str) -> std::io::Result<()> {
    let before = std::fs::read(dir.path.join("classes.json")).unwrap_or_else(|_| b"null".to_vec());
    let keep = dir.path.join(format!("txn/{id}.classes-before.json"));
    netqos::apply::state_dir::write_synced(&keep, &before)
}

/// After a rollback of `id`: the class names are again those before it (when `netqos
/// apply` kept them; an agent's transactions leave the names as they are).
pub fn restore_classes(dir: &StateDir, id: &str) {
    let keep = dir.path.join(format!("txn/{id}.classes-before.json"));
    let names = dir.path.join("classes.json");
    match std::fs::read(&keep) {
        Ok(b) if b == b"null" => {
            let _ = std::fs::remove_file(&names);
        }
        Ok(b) => {
            let _ = netqos::apply::state_dir::write_synced(&names, &b);
        }
        Err(_) => {}
    }
}

/// The names of the applied classes, if an agent or apply saved them.
pub fn load_classes(dir: &StateDir) -> Option<Vec<metrics::ClassInfo>> {
    let b = std::fs::read(dir.path.join("classes.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// How the agent runs one transaction.
struct How<'b> {
    opts: netqos::apply::diff::Options,
    base: Option<Base<'b>>,
    /// Whether netqos's nftables table is a resource of this apply.
    nft: bool,
    source: String,
}

/// Applies `policy` through the library's apply transaction on top of the mirrored
/// kernel (its snapshot and read-back come from the mirror; with a base, of the objects
/// that changed only), with the conflist (and the netqos CNI plugin a conflist names) as
/// resources, as `netqos apply` does.
fn transact(kernel: &mut Mirrored, dir: &StateDir, policy: &Policy, how: How<'_>) -> Applied {
    use netqos::apply::conflist_file::{ConflistFile, Prepared, prepare};
    use netqos::apply::transaction::{Observer, Outcome, Transaction};
    struct Timed(super::timings::Timings);
    impl Observer for Timed {
        fn phase(&mut self, name: &'static str) {
            self.0.mark(name);
        }
    }
    let conflist = match (&policy.pods, &policy.conflist) {
        (Some(pods), Some(path)) => match prepare(pods, path) {
            Ok(Prepared::Install {
                path,
                original,
                patched,
            }) => Some(ConflistFile {
                path,
                original,
                patched,
            }),
            Ok(_) => None,
            Err(_) => return Applied::NotStarted(format!("{} cannot be patched", path.display())),
        },
        _ => None,
    };
    let options = netqos::apply::transaction::Options {
        source: how.source,
        diff: how.opts,
        confirm: None,
        hooks: super::apply::hooks_from_env(),
        base: how.base,
    };
    let mut observer = Timed(super::timings::Timings::from_env());
    let mut t = Transaction::new(kernel, dir, options);
    if how.nft {
        // netqos's nftables table first, as `netqos apply` orders it.
        t = t.resource(policy.nft.clone());
    }
    if let Some(c) = conflist {
        let bin_dir = netqos::apply::cni_plugin::bin_dir_for(
            policy.pods.as_ref().unwrap_or(&Default::default()),
        );
        if let Some(p) =
            netqos::apply::cni_plugin::PluginBinary::needed_by(&c.patched, bin_dir, false)
        {
            t = t.resource(p);
        }
        t = t.resource(c);
    }
    match t.observer(&mut observer).apply_ref(&policy.target) {
        Err(e) => Applied::NotStarted(e.to_string()),
        Ok(Outcome::Unchanged) => Applied::Unchanged,
        Ok(Outcome::Applied(a)) => match a.unrecorded {
            None => Applied::Applied(a.changes, a.scope),
            // The kernel holds it but the state directory does not say so: an error to
            // see, not a success to forget.
            Some(e) => Applied::NotStarted(format!(
                "applied (transaction {}) but not recorded: {e}",
                a.id
            )),
        },
        Ok(Outcome::RolledBack(f)) => Applied::RolledBack(f.error.to_string()),
        Ok(Outcome::RollbackFailed(f, e)) => {
            Applied::RollbackFailed(format!("{}; undo: {e}", f.error))
        }
    }
}

/// What `/metrics` and `/healthz` show: the shared counters and a fresh class dump.
struct AgentPages {
    shared: Arc<Shared>,
    counters: Mutex<Option<Counters>>,
}

impl Pages for AgentPages {
    fn metrics(&self) -> Result<String, String> {
        let classes = self
            .shared
            .classes
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        let agent = self.shared.counters.lock().map(|g| g.clone()).ok();
        let mut devices: Vec<String> = classes.iter().map(|c| c.device.clone()).collect();
        devices.sort();
        devices.dedup();
        let mut guard = self
            .counters
            .lock()
            .map_err(|_| "counter reader poisoned")?;
        if guard.is_none() {
            *guard = Some(Counters::open().map_err(|e| e.to_string())?);
        }
        let reader = guard.as_mut().ok_or("no counter reader")?;
        let stats = match reader.read(&devices) {
            Ok(s) => s,
            Err(e) => {
                *guard = None;
                return Err(e.to_string());
            }
        };
        Ok(metrics::prometheus(&Exposition {
            classes: metrics::sample(&classes, &stats),
            agent,
            drift: None,
        }))
    }

    fn health(&self) -> Result<(), String> {
        let c = self.shared.counters.lock().map_err(|_| "state poisoned")?;
        if c.healthy {
            Ok(())
        } else {
            Err(c.reason.clone())
        }
    }
}

/// SIGTERM and SIGINT set `term`, SIGHUP sets `hup`.
fn signals() -> Result<Signals, Exit> {
    let signals = Signals::default();
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &signals.term),
        (signal_hook::consts::SIGINT, &signals.term),
        (signal_hook::consts::SIGHUP, &signals.hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            eprintln!("netqos: cannot handle signal {sig}: {e}");
            return Err(Exit::Io);
        }
    }
    Ok(signals)
}

/// Serves /metrics and /healthz from `shared` on `listen`, in its own thread.
fn serve(listen: SocketAddr, shared: &Arc<Shared>, ui: Ui) -> Result<(), Exit> {
    let server = match Server::bind(listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netqos: cannot listen on {listen}: {e}");
            return Err(Exit::Io);
        }
    };
    if let Ok(addr) = server.local_addr()
        && !ui.quiet
    {
        eprintln!("netqos agent: serving /metrics and /healthz on http://{addr}");
    }
    server.spawn(Arc::new(AgentPages {
        shared: Arc::clone(shared),
        counters: Mutex::new(None),
    }));
    Ok(())
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    let dir = match state_dir(a.state_dir) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let _lock = match dir.lock(false) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netqos: {e}");
            eprintln!("netqos: is another `netqos agent` running on this state directory?");
            return Exit::Io;
        }
    };
    let signals = match signals() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let shared = Arc::new(Shared::default());
    if let Err(e) = serve(a.listen, &shared, ui) {
        return e;
    }
    let kernel = match open_kernel(None) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let mut kernel = match Mirrored::open(kernel) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    };
    let mut files: Vec<PathBuf> = vec![a.file.to_path_buf()];
    files.extend(a.vars.vars_file.iter().cloned());
    let config = Config {
        policy_files: files,
        policy_name: a.file.display().to_string(),
        resync: a.resync,
        retry: Duration::from_secs(5),
    };
    let mut host = CliHost {
        args: a,
        dir: dir.clone(),
        ui,
        saved_classes: None,
        nft_clean: false,
    };
    match daemon::run(&mut host, &mut kernel, &config, &shared, &signals) {
        Ok(()) => Exit::Ok,
        Err((1, diags)) => {
            eprint!("{diags}");
            eprintln!(
                "netqos: {} has errors: the agent did not start",
                a.file.display()
            );
            Exit::Invalid
        }
        Err((_, e)) => {
            eprintln!("netqos: {e}");
            Exit::Io
        }
    }
}
