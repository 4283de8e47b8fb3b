//! The node artefacts with the real tools: every example's `#cloud-config` passes
//! `cloud-init schema` and carries the compiled files byte for byte (read back with
//! PyYAML), and its systemd unit passes `systemd-analyze verify` with the scripts installed
//! at the paths it names and is enabled by `systemctl --root` for boot and for each device.

use std::path::Path;
use std::process::Command;

use crate::support::*;
use netqos::backend::{self, NodeFile, Render, Templates};
use netqos::vars::ExternalVars;

/// Every example's plan, plus one whose device names need escaping in unit names.
fn plans() -> Vec<(String, netqos::plan::Plan)> {
    let mut sources: Vec<(String, String)> = policies(&root().join("examples"))
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    sources.push((
        "odd 100% names.nq".to_string(),
        "netqos 1\ninterface veth-a@b {\n    rate 1gbit\n    class a {\n        rate 100mbit\n        default\n    }\n}\ninterface br-1.5 ingress {\n    rate 1gbit\n    class a {\n        rate 100mbit\n        default\n    }\n}\n".to_string(),
    ));
    sources
        .into_iter()
        .map(|(name, src)| {
            let model = netqos::check_source(&src, &ExternalVars::default())
                .model
                .unwrap_or_else(|| panic!("{name} checks"));
            (name, netqos::lower::lower(&model))
        })
        .collect()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("tool runs");
    (out.status.success(), text(&out))
}

/// The `write_files` of a cloud-config read back by PyYAML (as cloud-init reads it),
/// base64 decoded: `path\0permissions\0content\0` per file.
fn read_back(doc: &Path) -> Vec<NodeFile> {
    let script = "import base64, sys, yaml\n\
        d = yaml.safe_load(open(sys.argv[1], encoding='utf-8'))\n\
        for f in d['write_files']:\n\
        \x20   c = f['content']\n\
        \x20   c = base64.b64decode(c).decode() if f.get('encoding') == 'b64' else c\n\
        \x20   sys.stdout.buffer.write((f['path'] + '\\0' + f['permissions'] + '\\0' + c + '\\0').encode())\n";
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(doc)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = text.split('\0').collect();
    parts
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| NodeFile {
            path: c[0].to_string(),
            mode: u32::from_str_radix(c[1], 8).unwrap(),
            content: c[2].to_string(),
        })
        .collect()
}

#[test]
fn cloud_config_validates_with_cloud_init_and_carries_the_files() {
    if !tool("cloud-init", "cloud-init") {
        return;
    }
    let d = TempDir::new("node-cloud-init");
    // A user template whose output a literal block cannot hold (leading space, no final
    // newline) goes base64-encoded.
    let odd = Templates {
        apply: Some("  #!/bin/sh\n# odd\u{2028}template {{ source }}".to_string()),
        rollback: None,
    };
    for (n, (name, plan)) in plans().iter().enumerate() {
        for templates in [Templates::default(), odd.clone()] {
            let files = backend::node_files(&Render::new(plan, name, &templates)).unwrap();
            let doc = backend::cloud_config(&files, name).unwrap();
            let path = d.join(format!("{n}.yaml"));
            std::fs::write(&path, &doc).unwrap();
            let (ok, text) = run(Command::new("cloud-init")
                .args(["schema", "--config-file"])
                .arg(&path));
            assert!(ok && text.contains("Valid cloud-config"), "{name}: {text}");
            assert_eq!(read_back(&path), files, "{name}: files read back");
            assert!(doc.contains("  - [systemctl, enable, --now, netqos.service]\n"));
        }
    }
    // What users get: `netqos compile --emit cloud-init` of every example (with the CNI
    // conflist installation the scripts carry for a policy with pod limits).
    for path in policies(&root().join("examples")) {
        let out = netqos(
            &[
                "compile",
                path.to_str().unwrap(),
                "-o",
                "-",
                "--emit",
                "cloud-init",
            ],
            &root(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", path.display());
        let doc = d.join("cli.yaml");
        std::fs::write(&doc, &out.stdout).unwrap();
        let (ok, text) = run(Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&doc));
        assert!(
            ok && text.contains("Valid cloud-config"),
            "{}: {text}",
            path.display()
        );
        let files = read_back(&doc);
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [
                backend::APPLY_PATH,
                backend::ROLLBACK_PATH,
                backend::UNIT_PATH
            ]
        );
    }
}

#[test]
fn systemd_unit_verifies_with_systemd_analyze() {
    if !tool("systemd-analyze", "systemd") {
        return;
    }
    let d = TempDir::new("node-systemd");
    // `verify --root` needs the system's own units (sysinit.target, …) in the root, and
    // runs `man` for `Documentation=`: the page is installed in a MANPATH of its own.
    let sys = d.join("root/usr/lib/systemd");
    std::fs::create_dir_all(&sys).unwrap();
    let (ok, text) = run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(&sys));
    assert!(ok, "{text}");
    let man1 = d.join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    std::fs::copy(root().join("man/netqos.1"), man1.join("netqos.1")).unwrap();
    for (name, plan) in plans() {
        let t = Templates::default();
        for f in backend::node_files(&Render::new(&plan, &name, &t)).unwrap() {
            let p = d.join("root").join(f.path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &f.content).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode)).unwrap();
        }
        let (ok, text) = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", d.join("root").display()))
            .arg(backend::UNIT_NAME)
            .env("MANPATH", d.join("man")));
        assert!(
            ok && text.trim().is_empty(),
            "{name}: systemd-analyze verify:\n{text}"
        );
        let unit = backend::unit(&plan, &name).unwrap();
        for dev in &plan.devices {
            let du = backend::device_unit(&dev.device);
            assert!(
                unit.contains(&format!("BindsTo={du}\nAfter={du}\n")),
                "{unit}"
            );
        }
        // `systemctl enable` (offline, in the root) wires it to multi-user.target and to
        // every device unit, so it runs at boot and again when a device comes back.
        let systemctl = |verb: &str| {
            run(Command::new("systemctl")
                .arg(format!("--root={}", d.join("root").display()))
                .arg(verb)
                .arg(backend::UNIT_NAME))
        };
        let (ok, text) = systemctl("enable");
        assert!(ok, "{name}: systemctl enable:\n{text}");
        let etc = d.join("root/etc/systemd/system");
        let mut wanted_by = vec!["multi-user.target".to_string()];
        wanted_by.extend(plan.devices.iter().map(|x| backend::device_unit(&x.device)));
        for w in wanted_by {
            let link = etc.join(format!("{w}.wants")).join(backend::UNIT_NAME);
            assert!(link.is_symlink(), "{name}: {} missing", link.display());
        }
        let (ok, text) = systemctl("disable");
        assert!(ok, "{name}: systemctl disable:\n{text}");
        assert!(unit.contains("Type=oneshot\nRemainAfterExit=yes\n"));
    }
}

#[test]
fn a_broken_unit_is_refused_by_systemd_analyze() {
    // The check above can fail: a unit naming a missing script is refused.
    if !tool("systemd-analyze", "systemd") {
        return;
    }
    let d = TempDir::new("node-systemd-broken");
    let sys = d.join("root/usr/lib/systemd");
    std::fs::create_dir_all(&sys).unwrap();
    let (ok, text) = run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(&sys));
    assert!(ok, "{text}");
    let plan = &plans()[0].1;
    let unit_dir = d.join("root/etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    std::fs::write(
        unit_dir.join(backend::UNIT_NAME),
        backend::unit(plan, "p.nq").unwrap(),
    )
    .unwrap();
    let (ok, text) = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", d.join("root").display()))
        .arg(backend::UNIT_NAME));
    assert!(!ok && text.contains("netqos-apply.sh"), "{text}");
}

/// The agent unit (`--emit agent-service`): `systemd-analyze verify` accepts it with the
/// binary and the policy installed where it names them, it is a notify service with a
/// watchdog and restart, its hardening keeps `CAP_NET_ADMIN` (and only it), the CNI
/// directory of a `pods` policy stays writable, and `systemctl enable` wires it to boot.
#[test]
fn the_agent_unit_verifies_and_keeps_cap_net_admin() {
    if !tool("systemd-analyze", "systemd") {
        return;
    }
    let d = TempDir::new("node-agent-unit");
    let sys = d.join("root/usr/lib/systemd");
    std::fs::create_dir_all(&sys).unwrap();
    let (ok, text) = run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(&sys));
    assert!(ok, "{text}");
    let man1 = d.join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    std::fs::copy(root().join("man/netqos.1"), man1.join("netqos.1")).unwrap();
    let bin = d
        .join("root")
        .join(backend::BINARY_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(netqos_bin(), &bin).unwrap();
    // `ExecReload=/bin/kill`: util-linux's or procps's kill, on every node.
    let kill = d.join("root/bin/kill");
    std::fs::create_dir_all(kill.parent().unwrap()).unwrap();
    let (ok, host_kill) = run(Command::new("sh").args([
        "-c",
        "command -v kill || true; ls /usr/bin/kill /bin/kill 2>/dev/null | head -1",
    ]));
    assert!(ok);
    let host_kill = host_kill
        .lines()
        .find(|l| l.starts_with('/'))
        .unwrap_or("/usr/bin/kill")
        .to_string();
    std::fs::copy(&host_kill, &kill).unwrap_or_else(|e| panic!("{host_kill}: {e}"));
    let policy = d
        .join("root")
        .join(backend::POLICY_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(policy.parent().unwrap()).unwrap();
    std::fs::copy(root().join("examples/pods.nq"), &policy).unwrap();
    for (example, cni) in [
        ("control-plane.nq", None),
        ("pods.nq", Some("/etc/cni/net.d")),
    ] {
        let out = cli(["compile", "--emit", "agent-service", "-o", "-"])
            .arg(root().join("examples").join(example))
            .run()
            .code(0);
        let unit = out.stdout();
        for line in [
            "Type=notify\n",
            "WatchdogSec=30s\n",
            "Restart=on-failure\n",
            "CapabilityBoundingSet=CAP_NET_ADMIN\n",
            "ProtectSystem=strict\n",
            "NoNewPrivileges=yes\n",
            "ExecReload=/bin/kill -HUP $MAINPID\n",
        ] {
            assert!(unit.contains(line), "{example}: no {line:?} in\n{unit}");
        }
        match cni {
            Some(dir) => assert!(unit.contains(&format!("ReadWritePaths={dir}\n")), "{unit}"),
            None => assert!(!unit.contains("ReadWritePaths="), "{unit}"),
        }
        let path = d
            .join("root")
            .join(backend::AGENT_UNIT_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &unit).unwrap();
        let (ok, text) = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", d.join("root").display()))
            .arg(backend::AGENT_UNIT_NAME)
            .env("MANPATH", d.join("man")));
        assert!(
            ok && text.trim().is_empty(),
            "{example}: systemd-analyze verify:\n{text}\n{unit}"
        );
        let (ok, text) = run(Command::new("systemctl")
            .arg(format!("--root={}", d.join("root").display()))
            .arg("enable")
            .arg(backend::AGENT_UNIT_NAME));
        assert!(ok, "systemctl enable:\n{text}");
        assert!(
            d.join("root/etc/systemd/system/multi-user.target.wants")
                .join(backend::AGENT_UNIT_NAME)
                .is_symlink()
        );
    }
    // The check can fail: without the binary the unit is refused.
    std::fs::remove_file(&bin).unwrap();
    let (ok, text) = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", d.join("root").display()))
        .arg(backend::AGENT_UNIT_NAME));
    assert!(!ok && text.contains("netqos"), "{text}");
}
