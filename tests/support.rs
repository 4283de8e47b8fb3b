//! The one test harness shared by the integration tests. Use these; do not copy them.
//!
//! * **Temporary directories**: [`TempDir::new`]`("tag")` makes a fresh, empty
//!   `$TMPDIR/nqt-tag-PID-N` (unique per call, so parallel tests never share one) and
//!   removes it on drop. It derefs to [`Path`]: `d.join("p.nq")`, `&d` where a `&Path` is
//!   wanted; [`TempDir::write`] writes a file and returns its path.
//! * **Running the CLI**: [`cli`]`(["check", "p.nq"])` builds a run of the built binary
//!   (working directory the repository root unless [`Cli::cwd`]; `NO_COLOR=1`; the test
//!   hooks `NETQOS_FAIL_AFTER` / `NETQOS_PAUSE_AFTER` cleared unless set with [`Cli::env`]).
//!   Assertions run it and read like the expectation:
//!   `cli(["check", "p.nq"]).cwd(&d).code(1).stderr_has("NQ037")`. [`Ran`] holds the
//!   result ([`Ran::stdout`], [`Ran::stderr`], [`Ran::text`] = both, [`Ran::output`]);
//!   every failed assertion prints the command line and both streams.
//! * **Network namespaces**: [`Netns::new`]`("tag")` makes `nqt-tag-PID`, brings `lo` up, and
//!   returns `None` when namespaces are unavailable, so the test skips (`let Some(ns) =
//!   Netns::new("x") else { return };`) — unless `NETQOS_REQUIRE_NETNS` is set (CI), when
//!   it fails instead. [`Netns::peer`] makes a second namespace joined to this one by a veth
//!   pair (addresses and links up); [`Netns::veth`] a pair inside one namespace. Run shell
//!   in it with [`Netns::ok`] (asserts success, returns stdout) or [`Netns::sh`] (success
//!   and stdout + stderr), programs with [`Netns::command`] / [`Netns::spawn`], and netqos
//!   with [`Netns::netqos`] (a [`Cli`]); [`Netns::pids`] lists what runs in it. On drop
//!   every process left in the namespace is killed and the namespace deleted.
//! * **Tools and skips**: [`tool`]`("iperf3", "iperf3")` says whether a tool is installed;
//!   outside CI a missing tool skips the test, in CI (`CI` set) it fails it. Every skip goes
//!   through [`skip`], which records it for the summary printed at the end of the run.
//! * **Diagnostics and snapshots**: [`diagnose`], [`render`], [`insta_settings`],
//!   [`policies`], [`root`].
//! * **Random inputs**: [`Rng`], the one seedable PRNG of the tests (xorshift64*).

// The harness is a library for the test modules: not every helper is used at every commit.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use netqos::diagnostic::Diagnostic;
use netqos::report::{self, Source};
use netqos::vars::ExternalVars;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `netqos` binary.
pub fn netqos_bin() -> &'static str {
    env!("CARGO_BIN_EXE_netqos")
}

/// Checks a source, returning sorted diagnostics.
pub fn diagnose(src: &str, vars: &ExternalVars) -> Vec<Diagnostic> {
    netqos::check_source(src, vars).diagnostics.into_sorted()
}

/// Renders diagnostics without colour, the way `netqos check` prints them.
pub fn render(name: &str, src: &str, diags: &[Diagnostic]) -> String {
    report::human(
        diags,
        &Source {
            name: name.to_string(),
            text: src.to_string(),
        },
        false,
    )
}

/// Insta settings that keep snapshots in the top-level `snapshots/`.
pub fn insta_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

/// Every `*.nq` file directly in `dir`, sorted.
pub fn policies(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "nq"))
        .collect();
    v.sort();
    v
}

/// A process's stdout followed by its stderr, lossily decoded.
pub fn text(o: &Output) -> String {
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    s
}

// ---------------------------------------------------------------------------------------
// Temporary directories

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/nqt-TAG-PID-N`, empty.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("nqt-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` (creating parent directories) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    /// Reads `name` as text.
    pub fn read(&self, name: &str) -> String {
        let p = self.0.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for TempDir {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Running the CLI

/// A run of the built `netqos` binary, not yet started. See the module doc.
pub struct Cli {
    cmd: Command,
    shown: Vec<String>,
    stdin: Option<Vec<u8>>,
}

/// `netqos ARGS` from the repository root.
pub fn cli<I, S>(args: I) -> Cli
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cli::wrapping(Command::new(netqos_bin())).args(args)
}

/// Runs `netqos ARGS` in `cwd` and returns its output. Kept for tests written before
/// [`cli`]; new tests use `cli(args).cwd(dir)`.
pub fn netqos(args: &[&str], cwd: &Path) -> Output {
    cli(args).cwd(cwd).run().output
}

impl Cli {
    /// `cmd` (which ends in the binary, e.g. `ip netns exec NS netqos`) with the harness's
    /// environment.
    fn wrapping(mut cmd: Command) -> Cli {
        cmd.current_dir(root())
            .env("NO_COLOR", "1")
            .env_remove("NETQOS_FAIL_AFTER")
            .env_remove("NETQOS_PAUSE_AFTER");
        Cli {
            cmd,
            shown: vec!["netqos".into()],
            stdin: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cli {
        self.shown.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Cli::arg)
    }

    /// Runs in `dir` instead of the repository root.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Cli {
        self.cmd.current_dir(dir);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cli {
        self.cmd.env(k, v);
        self
    }

    /// Sets environment variables.
    pub fn envs<'a>(self, kv: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Cli {
        kv.into_iter().fold(self, |c, (k, v)| c.env(k, v))
    }

    /// Feeds `bytes` on stdin (otherwise stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cli {
        self.stdin = Some(bytes.into());
        self
    }

    /// The command, for tests that spawn it themselves.
    pub fn command(self) -> Command {
        self.cmd
    }

    /// Runs to completion.
    pub fn run(mut self) -> Ran {
        let shown = self.shown.join(" ");
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("`{shown}` does not start: {e}"));
        let input = self.stdin.take().unwrap_or_default();
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("`{shown}`: {e}"));
        let _ = writer.join();
        Ran { output, shown }
    }

    /// Runs and asserts the exit code.
    pub fn code(self, code: i32) -> Ran {
        self.run().code(code)
    }
}

/// A finished run of netqos.
pub struct Ran {
    pub output: Output,
    shown: String,
}

impl Ran {
    /// The exit code (-1 when killed by a signal).
    pub fn status(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// Stdout, lossily decoded.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Stderr, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Stdout followed by stderr.
    pub fn text(&self) -> String {
        text(&self.output)
    }

    /// Panics with the command line, `what` and both streams.
    fn fail(&self, what: &str) -> ! {
        let mut m = format!("`{}`: {what}\n", self.shown);
        let _ = write!(
            m,
            "--- stdout\n{}--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        panic!("{m}");
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Ran {
        if self.output.status.code() != Some(code) {
            self.fail(&format!(
                "exit {:?}, expected {code}",
                self.output.status.code()
            ));
        }
        self
    }

    /// Asserts that stderr contains `s`.
    #[track_caller]
    pub fn stderr_has(self, s: &str) -> Ran {
        if !self.stderr().contains(s) {
            self.fail(&format!("stderr lacks {s:?}"));
        }
        self
    }

    /// Asserts that stdout or stderr contains `s`.
    #[track_caller]
    pub fn text_has(self, s: &str) -> Ran {
        if !self.text().contains(s) {
            self.fail(&format!("neither stream has {s:?}"));
        }
        self
    }

    /// Asserts that stdout contains `s`.
    #[track_caller]
    pub fn stdout_has(self, s: &str) -> Ran {
        if !self.stdout().contains(s) {
            self.fail(&format!("stdout lacks {s:?}"));
        }
        self
    }
}

// ---------------------------------------------------------------------------------------
// Tools and skips

/// Records that the calling test skips, and why: printed now and in the summary at the end
/// of the run (see `tests/run-summary.sh`).
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("skipping {test}: {why}");
    if let Some(log) = std::env::var_os("NETQOS_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

/// The skip policy in one place: a missing prerequisite skips the test (recorded by
/// [`skip`]) unless the environment variable `required_by` is set, when it fails it.
pub fn skip_unless_required(required_by: &str, why: &str) {
    assert!(
        std::env::var_os(required_by).is_none(),
        "{required_by} is set but {why}"
    );
    skip(why);
}

fn installed(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("command -v \"$1\" >/dev/null")
        .arg("sh")
        .arg(name)
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a tool the test needs is installed. Outside CI a missing tool skips the test
/// (`false`); in CI (`CI` set) it fails it, since `.ci/run` installs `package`.
pub fn tool(name: &str, package: &str) -> bool {
    let found = installed(name);
    if !found {
        skip_unless_required(
            "CI",
            &format!("{name} is not installed (.ci/run installs {package})"),
        );
    }
    found
}

/// Like [`tool`] for a tool a kernel test needs: it fails the test when
/// `NETQOS_REQUIRE_NETNS` is set, the same variable that makes namespaces mandatory.
pub fn kernel_tool(name: &str, package: &str) -> bool {
    let found = installed(name);
    if !found {
        skip_unless_required(
            "NETQOS_REQUIRE_NETNS",
            &format!("{name} is not installed (.ci/run installs {package})"),
        );
    }
    found
}

// ---------------------------------------------------------------------------------------
// Network namespaces

/// A network namespace `nqt-TAG-PID` of this test; see the module doc.
pub struct Netns(pub String);

impl Netns {
    /// Creates the namespace with `lo` up; `None` (skip) when namespaces are unavailable,
    /// unless `NETQOS_REQUIRE_NETNS` is set.
    pub fn new(tag: &str) -> Option<Netns> {
        let name = format!("nqt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            skip_unless_required(
                "NETQOS_REQUIRE_NETNS",
                "`ip netns add` failed: network namespaces need root and iproute2",
            );
            return None;
        }
        let ns = Netns(name);
        ns.ok("ip link set lo up");
        Some(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The namespace's bind mount, for `CNI_NETNS` and `nsenter`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// A second namespace `nqt-TAG-PID` joined to this one by a veth pair: `dev` here and
    /// `peer_dev` there, each with its address (`CIDR`, or `""` for none) and up.
    pub fn peer(
        &self,
        tag: &str,
        dev: &str,
        addr: &str,
        peer_dev: &str,
        peer_addr: &str,
    ) -> Option<Netns> {
        let peer = Netns::new(tag)?;
        self.ok(&format!(
            "ip link add {dev} type veth peer name {peer_dev} netns {}",
            peer.0
        ));
        for (ns, d, a) in [(self, dev, addr), (&peer, peer_dev, peer_addr)] {
            if !a.is_empty() {
                ns.ok(&format!("ip addr add {a} dev {d}"));
            }
            ns.ok(&format!("ip link set {d} up"));
        }
        Some(peer)
    }

    /// A veth pair `dev` ↔ `peer_dev` inside this namespace, both up.
    pub fn veth(&self, dev: &str, peer_dev: &str) {
        self.ok(&format!(
            "ip link add {dev} type veth peer name {peer_dev} && ip link set {dev} up && ip link set {peer_dev} up"
        ));
    }

    /// `program` run in the namespace (`ip netns exec`), not yet started.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }

    /// Runs `sh -c cmd` in the namespace: (success, stdout + stderr).
    pub fn sh(&self, cmd: &str) -> (bool, String) {
        let out = self
            .command("sh")
            .args(["-c", cmd])
            .output()
            .expect("ip netns exec runs");
        (out.status.success(), text(&out))
    }

    /// Runs `sh -c cmd` in the namespace, asserting success; returns stdout.
    #[track_caller]
    pub fn ok(&self, cmd: &str) -> String {
        let out = self
            .command("sh")
            .args(["-c", cmd])
            .output()
            .expect("ip netns exec runs");
        assert!(
            out.status.success(),
            "`{cmd}` failed in {}:\n{}",
            self.0,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` in the namespace with stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args[0])
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec starts")
    }

    /// The ids of the processes running in the namespace.
    pub fn pids(&self) -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `netqos ARGS` in the namespace.
    pub fn netqos<I, S>(&self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Cli::wrapping(self.command(netqos_bin())).args(args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes the test left in the namespace (servers, a detached revert).
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

// ---------------------------------------------------------------------------------------
// Random inputs

/// xorshift64*: small, deterministic from its seed (`Rng(seed)`, never 0), no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// [`Rng::below`] for indices.
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.index(v.len())]
    }
}
