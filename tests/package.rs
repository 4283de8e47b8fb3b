//! The Debian package (`packaging/deb/build.sh`): built twice (different umask and temp
//! dir) to the same bytes, with every member root-owned at the changelog's date; lintian
//! clean with every severity fatal; its units keep the agent artefact's settings. Then, as
//! root in CI (`NETQOS_REQUIRE_NETNS`) or with `NETQOS_TEST_DPKG=1`, it is installed on
//! this machine with the real `dpkg -i` (not `dpkg --root`: `man -w`, the shells and
//! systemd read the real system paths): `man -w`, `netqos --version`, `systemd-analyze
//! verify` and the completions of bash, zsh and fish work; `dpkg -r`, then `dpkg --purge`
//! (run by a guard even when an assertion fails), each leave the trees it touched as they
//! were.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::*;

const PACKAGE_PATHS: &[&str] = &[
    "./usr/bin/netqos",
    "./usr/share/man/man1/netqos.1.gz",
    "./usr/share/man/man5/netqos.5.gz",
    "./usr/share/bash-completion/completions/netqos",
    "./usr/share/zsh/vendor-completions/_netqos",
    "./usr/share/fish/vendor_completions.d/netqos.fish",
    "./usr/lib/systemd/system/netqos.service",
    "./usr/lib/systemd/system/netqos-agent.service",
    "./usr/share/doc/netqos/copyright",
    "./usr/share/doc/netqos/changelog.gz",
    "./usr/share/lintian/overrides/netqos",
    "./usr/share/doc/netqos/examples/control-plane.nq",
];

/// Runs a command, returning whether it succeeded and its stdout + stderr.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (out.status.success(), text(&out))
}

fn ok(cmd: &mut Command) -> String {
    let (ok, text) = run(cmd);
    assert!(ok, "{cmd:?}:\n{text}");
    text
}

/// `build.sh` with the tests' binary into `out` (xz level 1: the bytes are what is
/// compared, the ratio is not), in a shell with `umask`; returns the .deb's path.
fn build(out: &Path, umask: &str) -> PathBuf {
    let script = root().join("packaging/deb/build.sh");
    let tmp = out.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let printed = ok(Command::new("timeout")
        .args([
            "300",
            "sh",
            "-c",
            "umask \"$1\"; shift; exec \"$@\"",
            "sh",
            umask,
        ])
        .arg(&script)
        .args(["--binary", netqos_bin(), "--level", "1", "--out"])
        .arg(out)
        .env("TMPDIR", &tmp)
        .env_remove("SOURCE_DATE_EPOCH"));
    let deb = PathBuf::from(printed.lines().last().unwrap_or_default());
    assert!(deb.is_file(), "build.sh printed {printed}");
    deb
}

/// The package built once for the whole run (under Cargo's per-target test temp dir).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleetpkg-deb-a");
        let _ = std::fs::remove_dir_all(&out);
        build(&out, "022")
    })
}

fn have_dpkg_tools() -> bool {
    tool("dpkg-deb", "dpkg") && tool("dpkg-shlibdeps", "dpkg-dev")
}

#[test]
fn deb_is_reproducible_root_owned_and_complete() {
    if !have_dpkg_tools() {
        return;
    }
    let again = TempDir::new("fleetpkg-deb-b");
    let second = build(&again, "077");
    let first = std::fs::read(deb()).unwrap();
    assert!(
        first == std::fs::read(&second).unwrap(),
        "two builds of the same binary differ: {} vs {}",
        deb().display(),
        second.display()
    );
    let listing = ok(Command::new("dpkg-deb")
        .arg("--contents")
        .arg(deb())
        .env("TZ", "UTC"));
    let date = ok(Command::new("dpkg-parsechangelog")
        .args(["-l", "packaging/deb/changelog", "-S", "Date"])
        .current_dir(root()));
    let day = ok(Command::new("date")
        .args(["-u", "-d", date.trim(), "+%Y-%m-%d %H:%M"])
        .env("TZ", "UTC"));
    let mut paths = Vec::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "root/root", "{line}");
        assert_eq!(format!("{} {}", f[3], f[4]), day.trim(), "{line}");
        let mode = f[0];
        let expect = if f[5] == "./usr/bin/netqos" {
            "-rwxr-xr-x"
        } else if mode.starts_with('d') {
            "drwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, expect, "{line}");
        paths.push(f[5].to_string());
    }
    for p in PACKAGE_PATHS {
        assert!(paths.iter().any(|q| q == p), "{p} missing:\n{listing}");
    }
    for p in policies(&root().join("examples")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let want = format!("./usr/share/doc/netqos/examples/{name}");
        assert!(paths.contains(&want), "{want} missing:\n{listing}");
    }
    assert!(
        !listing.contains("/."),
        "a dot file is packaged:\n{listing}"
    );
    let version = ok(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb())
        .arg("Version"));
    assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn build_script_passes_shellcheck() {
    if tool("shellcheck", "shellcheck") {
        ok(Command::new("shellcheck").arg(root().join("packaging/deb/build.sh")));
    }
}

#[test]
fn deb_is_lintian_clean_at_every_severity() {
    if !have_dpkg_tools() || !tool("lintian", "lintian") {
        return;
    }
    let (ok, out) = run(Command::new("timeout")
        .args([
            "300",
            "lintian",
            "--pedantic",
            "--display-info",
            "--fail-on",
        ])
        .arg("error,warning,info,pedantic")
        .arg(deb()));
    let tags: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains("running with root privileges"))
        .collect();
    assert!(ok && tags.is_empty(), "lintian:\n{out}");
}

/// The `[Service]` settings of a unit, comments and blank lines left out.
fn service_settings(unit: &str) -> Vec<String> {
    unit.lines()
        .skip_while(|l| *l != "[Service]")
        .take_while(|l| *l != "[Install]")
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn packaged_agent_unit_keeps_the_artefacts_settings() {
    let out = cli([
        "compile",
        "examples/control-plane.nq",
        "-o",
        "-",
        "--emit",
        "agent-service",
    ])
    .code(0);
    let generated = String::from_utf8(out.output.stdout).unwrap();
    let packaged =
        std::fs::read_to_string(root().join("packaging/deb/netqos-agent.service")).unwrap();
    let ours = service_settings(&packaged);
    for line in service_settings(&generated) {
        // The package's binary is /usr/bin/netqos; it adds per-node options from
        // /etc/default/netqos.
        let line = line
            .replace("/usr/local/bin/netqos", "/usr/bin/netqos")
            .replace(
                " /etc/netqos/policy.nq",
                " $NETQOS_AGENT_OPTS /etc/netqos/policy.nq",
            );
        assert!(ours.contains(&line), "packaged unit lacks `{line}`");
    }
}

/// The files under the trees the package installs into (and dpkg's own database),
/// sorted: compared before installing and after purging.
fn tree_listing() -> String {
    let roots = [
        "/usr/bin",
        "/usr/lib/systemd/system",
        "/usr/share/man/man1",
        "/usr/share/man/man5",
        "/usr/share/bash-completion",
        "/usr/share/zsh/vendor-completions",
        "/usr/share/fish",
        "/usr/share/doc",
        "/usr/share/lintian/overrides",
        "/var/lib/dpkg/info",
    ];
    let present: Vec<&str> = roots
        .into_iter()
        .filter(|r| Path::new(r).exists())
        .collect();
    let mut lines: Vec<String> =
        ok(Command::new("find")
            .args(&present)
            .args(["-xdev", "-printf", "%y %m %p\n"]))
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.join("\n")
}

/// Purges the package when dropped, so a failed assertion never leaves it installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let (ok, out) = run(Command::new("timeout").args(["300", "dpkg", "--purge", "netqos"]));
        if !ok {
            eprintln!("dpkg --purge netqos failed:\n{out}");
        }
    }
}

/// Whether this run may install the package on this machine: as root, in CI
/// (`NETQOS_REQUIRE_NETNS`) or when asked (`NETQOS_TEST_DPKG=1`), with no netqos package
/// installed and none of the package's files present (a developer's own copy is never
/// overwritten).
fn may_install() -> bool {
    let required = std::env::var_os("NETQOS_REQUIRE_NETNS").is_some();
    if !required && std::env::var_os("NETQOS_TEST_DPKG").is_none() {
        skip("installs a package on this machine: set NETQOS_TEST_DPKG=1 (as root) to run it");
        return false;
    }
    let (_, uid) = run(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        skip_unless_required("NETQOS_REQUIRE_NETNS", "dpkg -i needs root");
        return false;
    }
    // `un`: dpkg remembers the name of a package once purged; only another state means a
    // netqos is (partly) installed.
    // A name dpkg never knew: dpkg-query fails (and says so on stderr).
    let (listed, status) =
        run(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Abbrev}", "netqos"]));
    let known = listed && !status.trim().is_empty() && !status.starts_with("un");
    let present: Vec<&&str> = PACKAGE_PATHS
        .iter()
        .filter(|p| Path::new(&p[1..]).exists())
        .collect();
    assert!(
        !known && present.is_empty(),
        "refusing to install over an existing netqos (package known to dpkg: {known}; files: {present:?})"
    );
    true
}

/// Output of `shell ARGS` run as a fresh user (HOME and XDG dirs in `home`).
fn fresh_shell(home: &Path, shell: &str, args: &[&str]) -> String {
    ok(Command::new("timeout")
        .arg("60")
        .arg(shell)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("MANPATH"))
}

fn assert_completions_load(home: &Path) {
    let bash = fresh_shell(
        home,
        "bash",
        &[
            "--norc",
            "--noprofile",
            "-c",
            "source /usr/share/bash-completion/completions/netqos; complete -p netqos; COMP_WORDS=(netqos com); COMP_CWORD=1; _netqos netqos com netqos; echo \"${COMPREPLY[*]}\"",
        ],
    );
    assert!(
        bash.starts_with("complete ") && bash.contains("-F _netqos netqos\n"),
        "{bash}"
    );
    assert!(bash.ends_with("\ncompile completions\n"), "{bash}");
    // zsh finds it on its default fpath: compinit registers it, +X loads the function.
    let zsh = fresh_shell(
        home,
        "zsh",
        &[
            "-f",
            "-c",
            "autoload -U compinit && compinit -u -D; print -r -- ${_comps[netqos]}; autoload -Uz +X _netqos && whence -w _netqos; print -l $^fpath/_netqos(N)",
        ],
    );
    assert_eq!(
        zsh,
        "_netqos\n_netqos: function\n/usr/share/zsh/vendor-completions/_netqos\n"
    );
    // fish with its normal start-up (vendor completion dirs) but no user configuration.
    let fish = fresh_shell(home, "fish", &["-c", "complete -C 'netqos '"]);
    let words: Vec<&str> = fish
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(l))
        .collect();
    for sub in [
        "agent",
        "apply",
        "check",
        "compile",
        "completions",
        "diff",
        "fmt",
    ] {
        assert!(words.contains(&sub), "fish lacks {sub}: {fish}");
    }
}

#[test]
fn dpkg_install_gives_man_completions_units_and_purges_clean() {
    if !have_dpkg_tools() || !may_install() {
        return;
    }
    for (t, p) in [
        ("man", "man-db"),
        ("bash", "bash"),
        ("zsh", "zsh"),
        ("fish", "fish"),
    ] {
        assert!(tool(t, p), "{t} is needed");
    }
    let before = tree_listing();
    let home = TempDir::new("fleetpkg-home");
    {
        let _guard = Installed;
        ok(Command::new("timeout")
            .args(["300", "dpkg", "-i"])
            .arg(deb()));
        let man = |args: &[&str]| ok(Command::new("man").args(args).env_remove("MANPATH"));
        assert_eq!(man(&["-w", "netqos"]), "/usr/share/man/man1/netqos.1.gz\n");
        assert_eq!(
            man(&["-w", "5", "netqos"]),
            "/usr/share/man/man5/netqos.5.gz\n"
        );
        let version = ok(Command::new("/usr/bin/netqos").arg("--version"));
        assert_eq!(version, format!("netqos {}\n", env!("CARGO_PKG_VERSION")));
        if tool("systemd-analyze", "systemd") {
            let verify = ok(Command::new("timeout")
                .args(["60", "systemd-analyze", "verify"])
                .arg("/usr/lib/systemd/system/netqos.service")
                .arg("/usr/lib/systemd/system/netqos-agent.service")
                .env_remove("MANPATH"));
            assert!(
                verify.trim().is_empty(),
                "systemd-analyze verify:\n{verify}"
            );
        }
        assert_completions_load(&home);
        // `dpkg -r` alone already removes every file (the package has no conffiles and no
        // maintainer scripts); the guard's purge then drops what dpkg remembers.
        ok(Command::new("timeout").args(["300", "dpkg", "-r", "netqos"]));
        assert_same_trees(&before, "dpkg -r");
    }
    let (known, status) = run(Command::new("dpkg-query").args(["-W", "netqos"]));
    assert!(!known, "dpkg still knows netqos after the purge: {status}");
    assert_same_trees(&before, "dpkg --purge");
}

fn assert_same_trees(before: &str, after_what: &str) {
    let after = tree_listing();
    if before != after {
        let diff = similar::TextDiff::from_lines(before, &after);
        panic!("{after_what} left changes:\n{}", diff.unified_diff());
    }
}
