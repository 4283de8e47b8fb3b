//! `compile`: every artefact of every example snapshotted; scripts pass `sh -n` and
//! shellcheck; the CLI writes only changed files and prints one artefact with `-o -`.

use std::process::Command;

use crate::support::*;
use netqos::backend::{self, Render, Templates};
use netqos::vars::ExternalVars;

#[test]
fn every_artefact_of_every_example() {
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
        let tree = backend::tree(&plan);
        let unit = backend::unit(&plan, &file).unwrap();
        let cloud = backend::node_files(&Render::new(&plan, &file, &t))
            .and_then(|files| backend::cloud_config(&files, &file))
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&json).expect("plan is JSON");
        for (kind, script) in [("tc", &tc), ("rollback", &rollback)] {
            let f = std::env::temp_dir()
                .join(format!("netqos-{name}-{kind}-{}.sh", std::process::id()));
            std::fs::write(&f, script).unwrap();
            let sh = Command::new("sh").arg("-n").arg(&f).output().unwrap();
            assert!(
                sh.status.success(),
                "{name} {kind}: sh -n: {}",
                String::from_utf8_lossy(&sh.stderr)
            );
            match Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(&f)
                .output()
            {
                Ok(out) => assert!(
                    out.status.success(),
                    "{name} {kind}: shellcheck:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ),
                Err(_) => assert!(
                    std::env::var_os("CI").is_none(),
                    "shellcheck is required in CI (.ci/run installs it)"
                ),
            }
            let _ = std::fs::remove_file(&f);
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

#[test]
fn compile_writes_only_changed_files_and_prints_one_artefact() {
    let d = std::env::temp_dir().join(format!("netqos-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let out = d.join("out");
    let policy = root().join("examples/pods.nq");
    let (p, o) = (policy.to_str().unwrap(), out.to_str().unwrap());
    let first = netqos(&["compile", p, "-o", o], &root());
    assert_eq!(first.status.code(), Some(0));
    // tc, rollback, plan, tree, cloud-init, systemd, annotations and four conflist files.
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 11);
    let mtime = std::fs::metadata(out.join("netqos-apply.sh"))
        .unwrap()
        .modified()
        .unwrap();
    let second = netqos(&["compile", p, "-o", o], &root());
    assert_eq!(second.status.code(), Some(0));
    assert!(
        second.stdout.is_empty(),
        "nothing rewritten on a second run"
    );
    assert_eq!(
        std::fs::metadata(out.join("netqos-apply.sh"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    let one = netqos(&["compile", p, "-o", "-", "--emit", "tree"], &root());
    assert!(String::from_utf8_lossy(&one.stdout).starts_with("eth0 egress: htb 1:"));
    assert_eq!(
        netqos(&["compile", p, "-o", "-"], &root()).status.code(),
        Some(2)
    );
    assert_eq!(
        netqos(&["compile", p, "-o", o, "--emit", "bogus"], &root())
            .status
            .code(),
        Some(2)
    );
    // A user template overrides the built-in one.
    let tdir = d.join("templates");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(
        tdir.join("rollback.sh.j2"),
        "#!/bin/sh\n# custom {{ source }}\n",
    )
    .unwrap();
    let custom = netqos(
        &[
            "compile",
            p,
            "-o",
            "-",
            "--emit",
            "rollback",
            "--templates",
            tdir.to_str().unwrap(),
        ],
        &root(),
    );
    assert_eq!(
        String::from_utf8_lossy(&custom.stdout),
        "#!/bin/sh\n# custom pods.nq\n"
    );
    // An invalid policy writes nothing.
    std::fs::write(
        d.join("bad.nq"),
        "netqos 1\ninterface eth0 {\n    rate 100mbps\n}\n",
    )
    .unwrap();
    let bad_out = d.join("bad-out");
    let bad = netqos(
        &[
            "compile",
            d.join("bad.nq").to_str().unwrap(),
            "-o",
            bad_out.to_str().unwrap(),
        ],
        &root(),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(!bad_out.exists());
    let _ = std::fs::remove_dir_all(&d);
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
