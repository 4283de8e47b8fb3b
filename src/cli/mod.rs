//! Command-line parsing (clap) and dispatch; the only place that reads files, arguments and
//! environment variables.

/// Prints to stdout, ignoring a closed pipe (`netqos explain | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `out!` with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod agent;
mod apply;
mod check;
mod cni;
mod compile;
mod completions;
mod diff;
mod doctor;
mod error;
mod explain;
mod fmt;
mod input;
mod live;
mod out_file;
mod plan;
mod rollback;
mod status;
mod timings;
mod top;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use netqos::exit::Exit;

#[derive(Debug, Parser)]
#[command(
    name = "netqos",
    version,
    about = "Check, compare and compile node bandwidth policy into tc/HTB scripts, systemd and cloud-init",
    long_about = "netqos checks a small policy file saying what a Kubernetes node's links must guarantee \
(control-plane reservations, pod and bulk limits) like a type checker.",
    after_help = "Examples:\n  netqos check examples/control-plane.nq\n  netqos check --format json --var uplink=eth1 policy.nq\n  netqos fmt --check examples/*.nq\n  netqos compile --vars host1.toml policy.nq -o out/host1\n  netqos diff old.nq policy.nq\n  netqos explain NQ010\n  netqos completions bash > /etc/bash_completion.d/netqos"
)]
struct Cli {
    /// When to colour output: auto (a terminal without NO_COLOR), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more about what is done.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Rendered for people, with source snippets (stderr).
    Human,
    /// A JSON array, one object per diagnostic (stdout).
    Json,
    /// GitHub Actions workflow commands, for PR annotations (stdout).
    Github,
}

/// Options about the node's CNI and which warnings are accepted, shared by check and compile.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The node's CNI conflist: check it and compute the patch against it.
    #[arg(long, value_name = "FILE")]
    pub conflist: Option<std::path::PathBuf>,
    /// Accept a warning or info code (e.g. NQ066): it is no longer printed or counted.
    #[arg(long, value_name = "CODE,…")]
    pub allow: Vec<String>,
}

impl NodeArgs {
    /// The `--allow` codes; errors cannot be allowed.
    pub fn allowed(&self) -> Result<Vec<netqos::codes::Code>, error::Error> {
        let mut out = Vec::new();
        for text in self.allow.iter().flat_map(|a| a.split(',')) {
            let text = text.trim();
            match netqos::codes::Code::parse(text) {
                Some(c) if c.severity() != netqos::diagnostic::Severity::Error => out.push(c),
                Some(c) => return Err(error::Error::NotAllowable(c)),
                None => return Err(error::Error::UnknownCode(text.to_string())),
            }
        }
        Ok(out)
    }
}

/// Variables from outside the policy.
#[derive(Debug, Clone, clap::Args)]
pub struct VarArgs {
    /// Set a variable, overriding its `let` default: NAME=VALUE (a set: NAME=a,b,c).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a TOML file (strings, numbers, arrays for sets).
    #[arg(long = "vars", value_name = "FILE.toml")]
    pub vars_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policies and print diagnostics; nothing is written.
    #[command(
        after_help = "Examples:\n  netqos check policy.nq\n  netqos check --deny-warnings --format github policies/*.nq\n  netqos check --vars host1.toml --var uplink=eth1 policy.nq"
    )]
    Check {
        /// Policy files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        /// Output format for diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Treat warnings as errors (exit 1 when there is any).
        #[arg(long)]
        deny_warnings: bool,
        #[command(flatten)]
        vars: VarArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Rewrite policies in the canonical layout (comments kept).
    #[command(
        after_help = "Examples:\n  netqos fmt policy.nq\n  netqos fmt --check examples/*.nq\n  netqos fmt --check --diff policy.nq\n  cat policy.nq | netqos fmt -"
    )]
    Fmt {
        /// Policy files to format in place (`-` reads stdin and writes stdout).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        /// Change nothing; exit 1 if a file is not formatted, printing its name.
        #[arg(long)]
        check: bool,
        /// With --check: print a unified diff of each file against its formatted text
        /// instead of its name.
        #[arg(long, requires = "check")]
        diff: bool,
    },
    /// Compile a policy into the node's artefacts: tc apply script, rollback, plan, tree,
    /// cloud-init, systemd unit, conflist patch, pod annotations.
    #[command(
        after_help = "Examples:\n  netqos compile policy.nq -o out/\n  netqos compile policy.nq -o - --emit tc | sh\n  netqos compile --vars host1.toml policy.nq -o hosts/host1\n  netqos compile pods.nq -o out/ --conflist /etc/cni/net.d/10-flannel.conflist"
    )]
    Compile {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// Output directory, or `-` to print one artefact on stdout (required).
        #[arg(short, long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Artefact kinds to write, comma separated; default all.
        #[arg(long, value_name = "KIND,…", value_enum, value_delimiter = ',')]
        emit: Vec<netqos::Artefact>,
        /// Directory with templates overriding the built-in ones (apply.sh.j2, rollback.sh.j2).
        #[arg(long, value_name = "DIR")]
        templates: Option<std::path::PathBuf>,
        /// Refuse to compile when there are warnings.
        #[arg(long)]
        deny_warnings: bool,
        #[command(flatten)]
        vars: VarArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show what `apply` would change on this host, changing nothing.
    #[command(
        after_help = "Examples:\n  netqos plan policy.nq\n  netqos plan --format json --var uplink=eth1 policy.nq"
    )]
    Plan {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = plan::PlanFormat::Human)]
        format: plan::PlanFormat,
        /// Plan the replacement of a root qdisc netqos did not create.
        #[arg(long)]
        replace_foreign: bool,
        /// The state directory, to name an interrupted apply (default: $NETQOS_STATE_DIR or
        /// /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Change the kernel in place over netlink to match the policy (journaled, undone on failure).
    #[command(
        after_help = "Examples:\n  netqos apply policy.nq\n  netqos apply --confirm 120s policy.nq && netqos confirm\n  netqos apply --probe tcp:10.0.0.1:6443 --probe tcp:10.0.0.1:22 policy.nq\n  NETQOS_STATE_DIR=/tmp/nq netqos apply policy.nq"
    )]
    Apply {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// Revert by itself after DURATION (120s, 2m) unless `netqos confirm` runs in time.
        #[arg(long, value_name = "DURATION", value_parser = apply::parse_duration)]
        confirm: Option<std::time::Duration>,
        /// Replace a root qdisc netqos did not create (it is restored by rollback).
        #[arg(long)]
        replace_foreign: bool,
        /// Where snapshots, journals and the lock live (default: $NETQOS_STATE_DIR or /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
        /// The node's CNI conflist to patch for the `pods` block (default: the flavour's path).
        #[arg(long, value_name = "FILE")]
        conflist: Option<std::path::PathBuf>,
        /// The CNI bin dir that must hold `netqos` for a conflist naming it (`pods { burst }`;
        /// default: the flavour's, e.g. /opt/cni/bin).
        #[arg(long, value_name = "DIR")]
        cni_bin_dir: Option<std::path::PathBuf>,
        /// Copy this netqos binary into the CNI bin dir as `netqos` when it is not there.
        #[arg(long)]
        install_plugin: bool,
        /// After applying, open a new TCP connection to HOST:PORT (tcp:10.0.0.1:6443); if any
        /// probe fails, undo the apply (exit 4). Repeatable.
        #[arg(long, value_name = "tcp:HOST:PORT", value_parser = netqos::apply::probe::parse)]
        probe: Vec<netqos::apply::probe::Probe>,
        /// How long each probe may take to connect.
        #[arg(long, value_name = "DURATION", value_parser = apply::parse_duration, default_value = "5s")]
        probe_timeout: std::time::Duration,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Keep an apply made with --confirm (from any session).
    #[command(after_help = "Examples:\n  netqos confirm")]
    Confirm {
        /// The state directory (default: $NETQOS_STATE_DIR or /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Return the devices of the last apply to the snapshot taken before it.
    #[command(after_help = "Examples:\n  netqos rollback")]
    Rollback {
        /// The state directory (default: $NETQOS_STATE_DIR or /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Show the live tree with rates and counters, and drift from the last applied policy.
    #[command(
        after_help = "Examples:\n  netqos status\n  netqos status eth0\n  netqos status --format json"
    )]
    Status {
        /// Only this interface (and its IFB).
        #[arg(value_name = "IFACE")]
        iface: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = status::StatusFormat::Human)]
        format: status::StatusFormat,
        /// The state directory (default: $NETQOS_STATE_DIR or /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
    },
    /// A live per-class view of the applied policy, refreshed every second; q quits.
    #[command(
        after_help = "Examples:\n  netqos top\n  netqos top eth0\n  netqos top --count 1 | less"
    )]
    Top {
        /// Only this interface (and its IFB).
        #[arg(value_name = "IFACE")]
        iface: Option<String>,
        /// Stop after this many refreshes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// The state directory (default: $NETQOS_STATE_DIR or /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Keep the node on a policy: apply it, repair drift, re-apply on change, serve metrics.
    #[command(
        after_help = "Examples:\n  netqos agent /etc/netqos/policy.nq\n  netqos agent --listen 0.0.0.0:9787 --vars /etc/netqos/host.toml policy.nq\n  kill -HUP $(pidof netqos)   # re-load the policy now"
    )]
    Agent {
        /// The policy file (re-loaded when it or its vars file changes, and on SIGHUP).
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// Where /metrics and /healthz are served (GET only).
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9787")]
        listen: std::net::SocketAddr,
        /// The state directory (default: $NETQOS_STATE_DIR or /var/lib/netqos).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
        /// The node's CNI conflist to keep patched for the `pods` block (default: the flavour's path).
        #[arg(long, value_name = "FILE")]
        conflist: Option<std::path::PathBuf>,
        /// How often the in-memory mirror is compared with a full read of the kernel.
        #[arg(long, value_name = "DURATION", value_parser = apply::parse_duration, default_value = "300s")]
        resync: std::time::Duration,
        /// At start, replace a root qdisc netqos did not create (drift repairs always do).
        #[arg(long)]
        replace_foreign: bool,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Explain a diagnostic code, with a bad and a fixed example; without a code, list them.
    #[command(after_help = "Examples:\n  netqos explain NQ001\n  netqos explain")]
    Explain {
        /// A code such as NQ010.
        code: Option<String>,
    },
    /// Show what changes between two policies, in words and numbers; exit 1 when they differ.
    #[command(
        after_help = "Examples:\n  netqos diff old/policy.nq policy.nq\n  git show main:policy.nq | netqos diff - policy.nq\n  netqos diff --format github --vars host1.toml old.nq new.nq"
    )]
    Diff {
        /// The policy before the change (`-` reads stdin).
        #[arg(value_name = "OLD")]
        old: std::path::PathBuf,
        /// The policy after the change.
        #[arg(value_name = "NEW")]
        new: std::path::PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = diff::DiffFormat::Human)]
        format: diff::DiffFormat,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Read the node (read-only) and say whether a policy can hold on it: CNI flavour and
    /// dirs, plugin versions, link speeds, root qdiscs; with FILE, the policy against them.
    #[command(
        after_help = "Examples:\n  netqos doctor\n  netqos doctor policy.nq\n  netqos doctor --root /mnt/node --format json pods.nq\n\nExit status: 0 the policy can hold, 1 something makes it fail, 3 the node cannot be read."
    )]
    Doctor {
        /// The policy to check against the node (optional).
        #[arg(value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Output format for findings.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Read the node's filesystem under this directory (an image, a mounted node).
        #[arg(long, value_name = "DIR")]
        root: Option<std::path::PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Print a shell completion script for bash, zsh or fish.
    #[command(
        after_help = "Examples:\n  netqos completions bash > /etc/bash_completion.d/netqos\n  netqos completions zsh > \"${fpath[1]}/_netqos\"\n  netqos completions fish > ~/.config/fish/completions/netqos.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: completions::Shell,
    },
}

/// Output settings shared by every command.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub color: bool,
    pub quiet: bool,
    pub verbose: bool,
}

/// The detached revert of `apply --confirm` (started by `apply` itself, never by a user):
/// parsed apart from [`Cli`] so that help and the completion scripts never offer it.
#[derive(Debug, Parser)]
#[command(name = "netqos __revert-after")]
struct RevertAfter {
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    id: String,
    deadline: u64,
}

/// The first argument that selects [`RevertAfter`].
pub(crate) const REVERT_AFTER: &str = "__revert-after";

/// Parses arguments and runs the command.
pub fn run() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == REVERT_AFTER)
    {
        let args = std::env::args_os().skip(1);
        return match RevertAfter::try_parse_from(args) {
            Ok(r) => {
                let ui = Ui {
                    color: false,
                    quiet: false,
                    verbose: false,
                };
                rollback::revert_after(r.state_dir.as_deref(), &r.id, r.deadline, ui).into()
            }
            Err(e) => {
                let _ = e.print();
                Exit::Usage.into()
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    };
    let ui = Ui {
        color,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    error::finish(offline(cli.command, ui), ui).into()
}

/// Runs the commands that do not touch the kernel; their errors are printed by
/// [`error::finish`]. The live commands go to [`live`].
fn offline(command: Command, ui: Ui) -> Result<Exit, error::Error> {
    match command {
        Command::Check {
            files,
            format,
            deny_warnings,
            vars,
            node,
        } => check::run(&files, format, deny_warnings, &vars, &node, ui),
        Command::Fmt { files, check, diff } => fmt::run(&files, check, diff, ui),
        Command::Compile {
            file,
            out,
            emit,
            templates,
            deny_warnings,
            vars,
            node,
        } => match out {
            None => Err(error::Error::NoOutput(file)),
            Some(out) => compile::run(
                &compile::Args {
                    file: &file,
                    out: &out,
                    emit: &emit,
                    templates: templates.as_deref(),
                    vars: &vars,
                    node: &node,
                    deny_warnings,
                },
                ui,
            ),
        },
        Command::Explain { code } => explain::run(code.as_deref()),
        Command::Diff {
            old,
            new,
            format,
            vars,
        } => diff::run(&old, &new, format, &vars, ui),
        Command::Completions { shell } => Ok(completions::run(
            shell,
            &mut <Cli as clap::CommandFactory>::command(),
        )),
        live_command => Ok(live(live_command, ui)),
    }
}

/// Runs the commands that read the kernel or serve from it (they print their own
/// errors). The commands of the apply transaction go to [`transaction`].
fn live(command: Command, ui: Ui) -> Exit {
    match command {
        Command::Doctor {
            file,
            format,
            root,
            vars,
        } => doctor::run(
            &doctor::Args {
                file: file.as_deref(),
                format,
                root,
                vars: &vars,
            },
            ui,
        ),
        Command::Status {
            iface,
            format,
            state_dir,
        } => status::run(iface.as_deref(), format, state_dir.as_deref(), ui),
        Command::Top {
            iface,
            count,
            state_dir,
        } => top::run(iface.as_deref(), count, state_dir.as_deref(), ui),
        Command::Agent {
            file,
            listen,
            state_dir,
            conflist,
            resync,
            replace_foreign,
            vars,
        } => agent::run(
            &agent::Args {
                file: &file,
                listen,
                state_dir: state_dir.as_deref(),
                conflist: conflist.as_deref(),
                vars: &vars,
                resync,
                replace_foreign,
            },
            ui,
        ),
        txn_command => transaction(txn_command, ui),
    }
}

/// Runs the commands of the apply transaction: plan, apply, confirm, rollback and the
/// rollback timer (they print their own errors).
fn transaction(command: Command, ui: Ui) -> Exit {
    match command {
        Command::Plan {
            file,
            format,
            replace_foreign,
            state_dir,
            vars,
        } => plan::run(
            &file,
            format,
            netqos::apply::diff::Options { replace_foreign },
            state_dir.as_deref(),
            &vars,
            ui,
        ),
        Command::Apply {
            file,
            confirm,
            replace_foreign,
            state_dir,
            conflist,
            cni_bin_dir,
            install_plugin,
            probe,
            probe_timeout,
            vars,
        } => apply::run(
            &apply::Args {
                file: &file,
                confirm,
                probes: &probe,
                probe_timeout,
                opts: netqos::apply::diff::Options { replace_foreign },
                state_dir: state_dir.as_deref(),
                conflist: conflist.as_deref(),
                plugin: apply::PluginArgs {
                    bin_dir: cni_bin_dir.as_deref(),
                    install: install_plugin,
                },
                vars: &vars,
            },
            ui,
        ),
        Command::Confirm { state_dir } => rollback::confirm(state_dir.as_deref(), ui),
        Command::Rollback { state_dir } => rollback::rollback(state_dir.as_deref(), ui),
        // Dispatched by `offline` and `live`, never passed here.
        Command::Check { .. }
        | Command::Fmt { .. }
        | Command::Compile { .. }
        | Command::Explain { .. }
        | Command::Diff { .. }
        | Command::Completions { .. }
        | Command::Doctor { .. }
        | Command::Status { .. }
        | Command::Top { .. }
        | Command::Agent { .. } => Exit::Usage,
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, then
/// rename, so a reader never sees half a file.
/// Frees `value` on a thread of its own that the process does not wait for: the model or
/// plan of 100,000 classes takes tens of milliseconds to free, time a command that is done
/// with it need not spend (the process's exit returns the memory either way).
pub fn discard<T: Send + 'static>(value: T) {
    // Detached; a failed spawn drops the closure, and the value with it, right here.
    let _detached = std::thread::Builder::new()
        .name("netqos-free".into())
        .spawn(move || drop(value));
}

pub fn write_atomic(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map_or("netqos".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.netqos-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
