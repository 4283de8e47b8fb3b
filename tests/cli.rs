//! The command line: exit statuses, output formats, variables, fmt --check.

use crate::support::*;

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("netqos-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SEED_002: &str = "netqos 1\ninterface eth0 {\n    rate 1000mbit\n    default 30\n    class control-plane {\n        id 0x10\n        rate 200mbit\n        ceil 1000mbit\n        prio 0\n        match dst 10.0.0.10\n    }\n}\n";

#[test]
fn check_exit_statuses() {
    let d = tmpdir("exit");
    std::fs::write(d.join("seed.nq"), SEED_002).unwrap();
    std::fs::write(d.join("mbps.nq"), "netqos 1\ninterface eth0 {\n    rate 100mbps\n    class a {\n        rate 1mbit\n        default\n    }\n}\n").unwrap();
    let ok = netqos(&["check", "examples/control-plane.nq"], &root());
    assert_eq!(ok.status.code(), Some(0));
    let seed = netqos(&["check", "seed.nq"], &d);
    assert_eq!(seed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&seed.stderr)
            .contains("error[NQ001]: default class 1:30 does not exist")
    );
    let mbps = netqos(&["check", "mbps.nq"], &d);
    assert_eq!(mbps.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&mbps.stderr).contains("NQ006"));
    let missing = netqos(&["check", "nope.nq"], &d);
    assert_eq!(missing.status.code(), Some(3));
    let usage = netqos(&["check", "--format", "yaml", "seed.nq"], &d);
    assert_eq!(usage.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn json_and_github_formats() {
    let d = tmpdir("formats");
    std::fs::write(d.join("seed.nq"), SEED_002).unwrap();
    let out = netqos(&["check", "--format", "json", "seed.nq"], &d);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let first = &v[0];
    assert_eq!(first["code"], "NQ001");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "seed.nq");
    assert_eq!(first["line"], 4);
    assert_eq!(first["column"], 13);
    assert_eq!(first["span"]["length"], 2);
    assert!(first["help"].as_str().unwrap().contains("control-plane"));
    let out = netqos(&["check", "--format", "github", "seed.nq"], &d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("::error file=seed.nq,line=4,col=13,endLine=4,endColumn=15,title=NQ001 default class missing::"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn deny_warnings_turns_warnings_into_failure() {
    let d = tmpdir("deny");
    let src = "netqos 1\nlet unused = 1mbit\ninterface eth0 {\n    rate 1gbit\n    class a {\n        rate 100mbit\n        default\n    }\n}\n";
    std::fs::write(d.join("w.nq"), src).unwrap();
    assert_eq!(netqos(&["check", "w.nq"], &d).status.code(), Some(0));
    assert_eq!(
        netqos(&["check", "--deny-warnings", "w.nq"], &d)
            .status
            .code(),
        Some(1)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn variables_from_outside_override_and_are_diagnosed() {
    let d = tmpdir("vars");
    let src = "netqos 1\nlet uplink = \"eth0\"\ninterface $uplink {\n    rate $speed\n    class a {\n        rate 10%\n        default\n    }\n}\n";
    std::fs::write(d.join("p.nq"), src).unwrap();
    // $speed is never given: NQ043 at its use.
    let out = netqos(&["check", "p.nq"], &d);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NQ043"));
    // Given on the command line and in a TOML file.
    assert_eq!(
        netqos(&["check", "--var", "speed=1gbit", "p.nq"], &d)
            .status
            .code(),
        Some(0)
    );
    std::fs::write(
        d.join("host.toml"),
        "speed = \"10gbit\"\nuplink = \"bond0\"\n",
    )
    .unwrap();
    assert_eq!(
        netqos(&["check", "--vars", "host.toml", "p.nq"], &d)
            .status
            .code(),
        Some(0)
    );
    // A bad value from outside is reported with where it came from.
    let out = netqos(
        &[
            "check",
            "--var",
            "uplink=eth0;reboot",
            "--var",
            "speed=1gbit",
            "p.nq",
        ],
        &d,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NQ030") && err.contains("--var uplink"),
        "{err}"
    );
    // Unused and malformed external variables.
    let out = netqos(
        &[
            "check",
            "--var",
            "speed=1gbit",
            "--var",
            "sped=2gbit",
            "p.nq",
        ],
        &d,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NQ045"));
    let out = netqos(&["check", "--var", "cp={", "p.nq"], &d);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NQ063"));
    std::fs::write(d.join("bad.toml"), "speed = { a = 1 }\n").unwrap();
    let out = netqos(&["check", "--vars", "bad.toml", "p.nq"], &d);
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn fmt_rewrites_and_checks() {
    let d = tmpdir("fmt");
    let messy =
        "netqos 1\ninterface eth0 {  rate 1gbit\n class a { rate 1mbit  default }  # rest\n}\n";
    std::fs::write(d.join("m.nq"), messy).unwrap();
    let out = netqos(&["fmt", "--check", "m.nq"], &d);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "m.nq");
    assert_eq!(
        std::fs::read_to_string(d.join("m.nq")).unwrap(),
        messy,
        "--check changes nothing"
    );
    assert_eq!(netqos(&["fmt", "m.nq"], &d).status.code(), Some(0));
    let formatted = std::fs::read_to_string(d.join("m.nq")).unwrap();
    assert_eq!(
        formatted,
        "netqos 1\n\ninterface eth0 {\n    rate 1gbit\n    class a {  # rest\n        rate 1mbit\n        default\n    }\n}\n"
    );
    assert_eq!(
        netqos(&["fmt", "--check", "m.nq"], &d).status.code(),
        Some(0)
    );
    // A file with a syntax error is refused and left untouched.
    std::fs::write(d.join("broken.nq"), "netqos 1\ninterface eth0 {\n").unwrap();
    assert_eq!(netqos(&["fmt", "broken.nq"], &d).status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(d.join("broken.nq")).unwrap(),
        "netqos 1\ninterface eth0 {\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("netqos-tmp"))
        .collect();
    assert!(leftovers.is_empty());
    let _ = std::fs::remove_dir_all(&d);
}
