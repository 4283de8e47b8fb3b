//! `netqos apply FILE`: maps the flags to a `transaction::Transaction` (with the conflist
//! and the probes as resources, the confirm window's detached reverter, the test hooks from
//! the environment) and its outcome to an exit status: 0 applied (or nothing to change), 3
//! an I/O or environment error (nothing changed, or the kernel holds the policy but its
//! outcome could not be recorded), 4 failed and undone, 5 the undo failed too.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::live::{load_target, lock, open_kernel, print_changes, state_dir};
use super::{Exit, Ui, VarArgs};
use netqos::apply::cni_plugin::PluginBinary;
use netqos::apply::conflist_file::{self, ConflistFile, PrepareError, Prepared};
use netqos::apply::diff::Options;
use netqos::apply::probe::{Probe, ProbeCheck};
use netqos::apply::state_dir::{Pending, StateDir};
use netqos::apply::transaction::{
    Applied, Confirm, Failure, Observer, Outcome, Reverter, Transaction,
};
use netqos::apply::txn::Hooks;

pub struct Args<'a> {
    pub file: &'a Path,
    pub confirm: Option<Duration>,
    /// New connections that must succeed once the kernel holds the policy.
    pub probes: &'a [Probe],
    pub probe_timeout: Duration,
    pub opts: Options,
    pub state_dir: Option<&'a Path>,
    /// Overrides the flavour's conflist path.
    pub conflist: Option<&'a Path>,
    pub plugin: PluginArgs<'a>,
    pub vars: &'a VarArgs,
}

/// Where the netqos CNI plugin must be for a conflist that names it, and whether to put it
/// there.
pub struct PluginArgs<'a> {
    pub bin_dir: Option<&'a Path>,
    pub install: bool,
}

/// The conflist change of the policy's `pods` block, worked out against the node's file
/// before anything changes. `Err` is the exit status (diagnostics printed).
fn prepare_conflist(
    a: &Args<'_>,
    pods: Option<&netqos::model::Pods>,
    ui: Ui,
) -> Result<Option<ConflistFile>, Exit> {
    let Some(pods) = pods else {
        return Ok(None);
    };
    let Some(path) = conflist_file::path_for(pods, a.conflist) else {
        return Ok(None);
    };
    match conflist_file::prepare(pods, &path) {
        Ok(Prepared::Nothing(why)) => {
            if !ui.quiet {
                eprintln!("conflist: {why}");
            }
            Ok(None)
        }
        Ok(Prepared::Install {
            path,
            original,
            patched,
        }) => Ok(Some(ConflistFile {
            path,
            original,
            patched,
        })),
        Err(e) => {
            if let PrepareError::Invalid {
                path,
                text,
                diagnostics,
            } = &e
            {
                let src = netqos::report::Source {
                    name: path.display().to_string(),
                    text: text.clone(),
                };
                let mut json = Vec::new();
                super::check::print(diagnostics, &src, super::Format::Human, ui, &mut json);
            }
            eprintln!("netqos: {e}; nothing applied");
            Err(e.exit())
        }
    }
}

/// A duration on the command line that is not one.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("unknown unit `{unit}` in `{input}`: use s, m or h (120s)")]
    Unit { unit: String, input: String },
    #[error("`{0}` is not a duration such as 120s")]
    Number(String),
    #[error("a confirm window of 0 would revert at once; use at least 1s")]
    Zero,
}

/// Parses `120s`, `2m`, `90` (seconds), `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1),
        Some((i, _)) => (
            &s[..i],
            match &s[i..] {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                u => {
                    return Err(DurationError::Unit {
                        unit: u.to_string(),
                        input: s.to_string(),
                    });
                }
            },
        ),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::Number(s.to_string()))?;
    if n == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Phase timings (`NETQOS_TIMINGS`) and the transaction's lines on stderr.
struct Progress {
    timings: super::timings::Timings,
    ui: Ui,
}

impl Observer for Progress {
    fn phase(&mut self, name: &'static str) {
        self.timings.mark(name);
    }
    fn note(&mut self, line: &str) {
        if !self.ui.quiet {
            eprintln!("{line}");
        }
    }
    fn warn(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

/// The test hooks, from the environment (see the man page).
pub fn hooks_from_env() -> Hooks {
    let n = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    Hooks {
        fail_after: n("NETQOS_FAIL_AFTER"),
        pause_after: n("NETQOS_PAUSE_AFTER"),
        pause: n("NETQOS_PAUSE_SECS").map(|s| Duration::from_secs(s as u64)),
        fail_record: n("NETQOS_FAIL_RECORD") == Some(1),
    }
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    let mut progress = Progress {
        timings: super::timings::Timings::from_env(),
        ui,
    };
    let loaded = match load_target(a.file, a.vars, ui) {
        Ok(l) => l,
        Err(e) => return e,
    };
    progress.phase("check");
    let conflist = match prepare_conflist(a, loaded.pods.as_ref(), ui) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let dir = match state_dir(a.state_dir) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let _lock = match lock(&dir, false) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let mut kernel = match open_kernel(Some(&loaded.target)) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let options = netqos::apply::transaction::Options {
        source: loaded.name.clone(),
        diff: a.opts,
        confirm: a.confirm.map(|window| Confirm {
            window,
            reverter: &Detached,
        }),
        hooks: hooks_from_env(),
        base: None,
    };
    // netqos's nftables table first: its priorities name the classes the tree now holds.
    let mut t = Transaction::new(&mut kernel, &dir, options).resource(loaded.nft);
    if let Some(c) = conflist {
        // The plugin first: a conflist naming netqos is never written without it.
        let bin_dir = a.plugin.bin_dir.map_or_else(
            || {
                netqos::apply::cni_plugin::bin_dir_for(
                    loaded.pods.as_ref().unwrap_or(&Default::default()),
                )
            },
            Path::to_path_buf,
        );
        if let Some(p) = PluginBinary::needed_by(&c.patched, bin_dir, a.plugin.install) {
            t = t.resource(p);
        }
        t = t.resource(c);
    }
    for p in a.probes {
        t = t.resource(ProbeCheck {
            probe: p.clone(),
            timeout: a.probe_timeout,
        });
    }
    let result = t.observer(&mut progress).apply(loaded.target);
    match result {
        Err(e) => {
            eprintln!("netqos: {e}");
            e.exit()
        }
        Ok(outcome) => {
            save_class_names(&dir, &outcome, &loaded.classes);
            report(&outcome, &loaded.name, ui)
        }
    }
}

/// The names `status` and `top` show, as the agent saves them (else they would be those of
/// whatever policy an agent applied last); the ones replaced are kept for a rollback.
fn save_class_names(
    dir: &StateDir,
    outcome: &Outcome,
    classes: &[netqos::agent::metrics::ClassInfo],
) {
    let kept = match outcome {
        Outcome::Applied(a) => super::agent::keep_classes(dir, &a.id),
        Outcome::Unchanged => Ok(()),
        _ => Err(std::io::Error::other("not applied")),
    };
    if kept.is_ok()
        && let Err(e) = super::agent::save_classes(dir, classes)
    {
        eprintln!("netqos: warning: cannot save the class names: {e}");
    }
}

fn report(outcome: &Outcome, name: &str, ui: Ui) -> Exit {
    match outcome {
        Outcome::Unchanged => {
            if !ui.quiet {
                outln!("{name}: nothing to change; the kernel already matches the policy");
            }
        }
        Outcome::Applied(a) => {
            report_applied(a, name, ui);
            if let Some(e) = &a.unrecorded {
                // What is live must not go unsaid: the undo point may be stale.
                eprintln!(
                    "netqos: the kernel holds {name} (transaction {}), but its outcome could not \
                     be recorded: {e}\nnetqos: `netqos status` and `netqos rollback` may not know \
                     it; fix the state directory, then run `netqos apply` again",
                    a.id
                );
                return Exit::Io;
            }
        }
        Outcome::RolledBack(f) => {
            report_failure(f);
            eprintln!("netqos: the devices are as they were before the apply");
        }
        Outcome::RollbackFailed(f, e) => {
            report_failure(f);
            eprintln!(
                "netqos: undo failed too: {e}\nnetqos: inspect with `netqos status`, then \
                 retry `netqos rollback`"
            );
        }
    }
    outcome.exit()
}

fn report_applied(a: &Applied, name: &str, ui: Ui) {
    if ui.quiet {
        return;
    }
    outln!(
        "{name}: applied {} change(s) in {} ms (transaction {})",
        a.changes.len(),
        a.elapsed.as_millis(),
        a.id
    );
    if ui.verbose {
        print_changes(&a.changes);
    }
    if let Some(w) = a.confirm {
        outln!(
            "reverts in {} s unless `netqos confirm` runs (from any session)",
            w.as_secs()
        );
    }
}

fn report_failure(f: &Failure) {
    if f.at < f.total {
        eprintln!(
            "netqos: change {} of {} failed: {}",
            f.at + 1,
            f.total,
            f.error
        );
    } else {
        eprintln!("netqos: after all {} change(s): {}", f.total, f.error);
    }
    eprintln!(
        "netqos: undoing the {} change(s) made, back to the snapshot",
        f.at
    );
}

/// The confirm window's reverter: `netqos __revert-after` detached, in its own session
/// (it calls setsid), no terminal, output to `revert.log` in the state directory. It
/// outlives this process.
struct Detached;

impl Reverter for Detached {
    fn start(&self, dir: &StateDir, p: &Pending) -> std::io::Result<()> {
        let exe = std::env::current_exe()?;
        // The reverter's liveness: it holds this lock for as long as it runs (its stdin).
        let alive = dir
            .reverter_lock(&p.id)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let log = netqos::apply::safe_fs::options()
            .create(true)
            .append(true)
            .open(dir.path.join("revert.log"))?;
        Command::new(exe)
            .arg(super::REVERT_AFTER)
            .arg("--state-dir")
            .arg(&dir.path)
            .arg(&p.id)
            .arg(p.deadline.to_string())
            .env_remove("NETQOS_FAIL_AFTER")
            .env_remove("NETQOS_PAUSE_AFTER")
            .env_remove("NETQOS_FAIL_RECORD")
            .stdin(Stdio::from(alive))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(())
    }
}
