//! `compile`: every artefact of every example snapshotted; scripts pass `sh -n` and
//! shellcheck; the CLI writes only changed files and prints one artefact with `-o -`.

use std::process::Command;

use crate::support::*;
use netqos::backend::{self, Render, Templates};
use netqos::vars::ExternalVars;

#[test]
fn every_artefact_of_every_example() {
    let shellcheck = tool("shellcheck", "shellcheck");
    let d = TempDir::new("compile-sh");
    for path in policies(&root().join("examples")) {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(&path).unwrap();
        let model = netqos::check_source(&src, &ExternalVars::default())
            .model
            .unwrap();
        let plan = netqos::lower::lower(&model);
        let file = format!("{name}.nq");
        let t = Templates::default();
        let tc = backend::tc_script(&Render::new(&plan, &file, &t)).unwrap();
        let rollback = backend::rollback_script(&Render::new(&plan, &file, &t)).unwrap();
        let json = backend::plan_json(&plan);
        let tree = backend::tree(&plan, false);
        let unit = backend::unit(&plan, &file).unwrap();
        let cloud = backend::node_files(&Render::new(&plan, &file, &t))
            .and_then(|files| backend::cloud_config(&files, &file))
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&json).expect("plan is JSON");
        for (kind, script) in [("tc", &tc), ("rollback", &rollback)] {
            let f = d.write(&format!("{name}-{kind}.sh"), script);
            let sh = Command::new("sh").arg("-n").arg(&f).output().unwrap();
            assert!(
                sh.status.success(),
                "{name} {kind}: sh -n: {}",
                String::from_utf8_lossy(&sh.stderr)
            );
            if shellcheck {
                let out = Command::new("shellcheck")
                    .args(["-s", "sh"])
                    .arg(&f)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{name} {kind}: shellcheck:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        insta_settings().bind(|| {
            insta::assert_snapshot!(format!("compile__{name}__tc"), tc);
            insta::assert_snapshot!(format!("compile__{name}__rollback"), rollback);
            insta::assert_snapshot!(format!("compile__{name}__plan"), json);
            insta::assert_snapshot!(format!("compile__{name}__tree"), tree);
            insta::assert_snapshot!(format!("compile__{name}__systemd"), unit);
            insta::assert_snapshot!(format!("compile__{name}__cloud-init"), cloud);
        });
    }
}

/// `--emit svg` for every example is a picture `rsvg-convert` renders (as GitHub would show
/// it), with every class, its id and its match lines in it.
#[test]
fn the_svg_tree_renders() {
    if !tool("rsvg-convert", "librsvg2-bin") {
        return;
    }
    let d = TempDir::new("compile-svg");
    for path in policies(&root().join("examples")) {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let svg = cli(["compile", "--emit", "svg", "-o", "-"])
            .arg(&path)
            .code(0)
            .stdout();
        let file = d.write(&format!("{name}.svg"), &svg);
        let png = d.join(format!("{name}.png"));
        let out = Command::new("rsvg-convert")
            .arg(&file)
            .arg("-o")
            .arg(&png)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
        let bytes = std::fs::read(&png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 2000,
            "{name}"
        );
        let plan = netqos::lower::lower(
            &netqos::check_source(
                &std::fs::read_to_string(&path).unwrap(),
                &Default::default(),
            )
            .model
            .unwrap(),
        );
        for c in plan.devices.iter().flat_map(|d| d.classes.iter().skip(1)) {
            let short = c.name.rsplit('/').next().unwrap();
            assert!(
                svg.contains(&format!(">{short}</tspan>")),
                "{name}: {short}"
            );
            assert!(
                svg.contains(&c.classid.to_string()),
                "{name}: {}",
                c.classid
            );
            for (words, _) in &c.matches {
                let shown: String = words.chars().take(20).collect();
                assert!(svg.contains(&shown), "{name}: {words}");
            }
        }
    }
}

#[test]
fn compile_writes_only_changed_files_and_prints_one_artefact() {
    let d = TempDir::new("compile");
    let out = d.join("out");
    let policy = root().join("examples/pods.nq");
    let (p, o) = (policy.to_str().unwrap(), out.to_str().unwrap());
    let first = cli(["compile", p, "-o", o]).code(0);
    // tc, rollback, plan, tree, svg, cloud-init, systemd, agent-service, annotations and
    // four conflist files.
    assert_eq!(first.stdout().lines().count(), 13);
    let mtime = std::fs::metadata(out.join("netqos-apply.sh"))
        .unwrap()
        .modified()
        .unwrap();
    let second = cli(["compile", p, "-o", o]).code(0);
    assert!(
        second.output.stdout.is_empty(),
        "nothing rewritten on a second run"
    );
    assert_eq!(
        std::fs::metadata(out.join("netqos-apply.sh"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    let one = cli(["compile", p, "-o", "-", "--emit", "tree"]).run();
    assert!(one.stdout().starts_with("eth0 egress: htb 1:"));
    cli(["compile", p, "-o", "-"]).code(2);
    cli(["compile", p, "-o", o, "--emit", "bogus"]).code(2);
    // A user template overrides the built-in one.
    let tdir = d.join("templates");
    d.write(
        "templates/rollback.sh.j2",
        "#!/bin/sh\n# custom {{ source }}\n",
    );
    let custom = cli(["compile", p, "-o", "-", "--emit", "rollback", "--templates"])
        .arg(&tdir)
        .run();
    assert_eq!(custom.stdout(), "#!/bin/sh\n# custom pods.nq\n");
    // An invalid policy writes nothing.
    let bad = d.write(
        "bad.nq",
        "netqos 1\ninterface eth0 {\n    rate 100mbps\n}\n",
    );
    let bad_out = d.join("bad-out");
    cli(["compile"]).arg(&bad).arg("-o").arg(&bad_out).code(1);
    assert!(!bad_out.exists());
}

#[test]
fn streamed_files_replace_only_what_changed_and_a_broken_template_writes_nothing() {
    let d = TempDir::new("compile-stream");
    let out = d.join("out");
    let policy = root().join("examples/control-plane.nq");
    let (p, o) = (policy.to_str().unwrap(), out.to_str().unwrap());
    cli(["compile", p, "-o", o]).code(0);
    let plan = std::fs::read_to_string(out.join("plan.json")).unwrap();
    // A file of the same size but other bytes is replaced; a longer or shorter one too.
    let same_size: String = plan.chars().rev().collect();
    std::fs::write(out.join("plan.json"), &same_size).unwrap();
    std::fs::write(out.join("tree.txt"), "short\n").unwrap();
    let again = cli(["compile", p, "-o", o]).code(0);
    let stdout = again.stdout();
    let wrote: Vec<&str> = stdout.lines().collect();
    assert_eq!(wrote.len(), 2, "{wrote:?}");
    assert!(
        wrote
            .iter()
            .all(|l| l.ends_with("plan.json") || l.ends_with("tree.txt"))
    );
    assert_eq!(
        std::fs::read_to_string(out.join("plan.json")).unwrap(),
        plan
    );
    // A rollback template that does not compile stops before any file is written.
    d.write("templates/rollback.sh.j2", "#!/bin/sh\n{% if %}\n");
    let fresh = d.join("fresh");
    cli(["compile", p, "-o"])
        .arg(&fresh)
        .arg("--templates")
        .arg(d.join("templates"))
        .code(2);
    let written: Vec<_> = std::fs::read_dir(&fresh)
        .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "{written:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("netqos-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_file_that_cannot_be_written_leaves_every_file_as_it_was() {
    // `conflist` is a regular file where the conflist artefact needs a directory: that
    // artefact fails after the others rendered (on two threads), and none is put in place.
    let d = TempDir::new("compile-none");
    let out = d.join("out");
    let policy = root().join("examples/pods.nq");
    d.write("out/conflist", "");
    d.write("out/plan.json", "old\n");
    let ran = cli(["compile", policy.to_str().unwrap(), "-o"])
        .arg(&out)
        .code(3);
    assert!(ran.stderr().contains("conflist"), "{}", ran.text());
    assert!(ran.stdout().is_empty(), "{}", ran.text());
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["conflist", "plan.json"]);
    assert_eq!(
        std::fs::read_to_string(out.join("plan.json")).unwrap(),
        "old\n"
    );
    // With the obstacle gone, every file is written.
    std::fs::remove_file(out.join("conflist")).unwrap();
    let ran = cli(["compile", policy.to_str().unwrap(), "-o"])
        .arg(&out)
        .code(0);
    assert!(ran.stdout().contains("plan.json"), "{}", ran.text());
    assert!(out.join("conflist/patch.json").is_file());
}

#[test]
fn a_compile_that_may_start_no_thread_still_writes_every_file() {
    // The rendering, lowering and syncing threads are a speed-up, never a need: in a pids
    // cgroup that allows one task (a unit's TasksMax=1), a compile writes what it writes
    // with threads.
    /// A cgroup of this test's, removed when dropped (its one process has exited by then).
    struct Cgroup(std::path::PathBuf);
    impl Drop for Cgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let name = format!("netqos-test-{}", std::process::id());
    let Some(cg) = [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .iter()
    .filter_map(|base| {
        let cg = Cgroup(std::path::Path::new(base).join(&name));
        std::fs::create_dir(&cg.0).ok()?;
        // A plain directory (a tmpfs, a hierarchy without pids) goes with `cg`.
        cg.0.join("pids.max").exists().then_some(cg)
    })
    .next() else {
        return skip("no pids cgroup can be made here (needs root and the pids controller)");
    };
    let cg_dir = cg.0.clone();
    let d = TempDir::new("compile-nothreads");
    // Two interfaces of 2,500 classes: the sizes at which lowering and rendering spread.
    let mut policy = String::from("netqos 1\n");
    for i in 0..2 {
        policy.push_str(&format!("interface eth{i} {{\n  rate 10gbit\n"));
        for c in 0..2500 {
            policy.push_str(&format!(
                "  class c{c} {{\n    rate 1mbit\n    match dst 10.{i}.{}.{}\n  }}\n",
                c / 250,
                c % 250 + 1
            ));
        }
        policy.push_str("  class rest {\n    rate 1mbit\n    default\n  }\n}\n");
    }
    d.write("p.nq", &policy);
    let p = d.join("p.nq");
    cli(["compile", "-q", p.to_str().unwrap(), "-o"])
        .arg(d.join("threads"))
        .code(0);
    std::fs::write(cg_dir.join("pids.max"), "1").unwrap();
    let ran = std::process::Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && exec \"$2\" compile -q \"$3\" -o \"$4\"")
        .arg("sh")
        .arg(&cg_dir)
        .arg(netqos_bin())
        .arg(&p)
        .arg(d.join("alone"))
        .output()
        .unwrap();
    let refused = std::fs::read_to_string(cg_dir.join("pids.events")).unwrap_or_default();
    drop(cg);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        refused.contains("max ") && !refused.contains("max 0"),
        "{refused}"
    );
    let files = |dir: &str| {
        let mut f: Vec<(String, Vec<u8>)> = std::fs::read_dir(d.join(dir))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        f.sort();
        f
    };
    let (threads, alone) = (files("threads"), files("alone"));
    assert_eq!(threads.len(), 8);
    assert!(threads == alone, "the files differ");
}

#[test]
fn a_file_name_with_a_newline_cannot_inject_commands() {
    let model = netqos::check_source(
        &std::fs::read_to_string(root().join("examples/control-plane.nq")).unwrap(),
        &ExternalVars::default(),
    )
    .model
    .unwrap();
    let plan = netqos::lower::lower(&model);
    let name = "p\nid >PWNED #\nNETQOS_MAP\nNETQOS_BATCH\n.nq";
    for script in [
        backend::tc_script(&Render::new(&plan, name, &Templates::default())).unwrap(),
        backend::rollback_script(&Render::new(&plan, name, &Templates::default())).unwrap(),
    ] {
        assert!(
            !script.lines().any(|l| l.starts_with("id >PWNED")),
            "{script}"
        );
        // Only the real heredoc terminators stand alone on a line.
        assert!(script.lines().filter(|l| *l == "NETQOS_MAP").count() <= 1);
        assert!(script.contains("p?id >PWNED #?NETQOS_MAP?NETQOS_BATCH?.nq"));
    }
}
