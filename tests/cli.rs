//! The command line: exit statuses, output formats, variables, fmt --check.

use crate::support::*;

const SEED_002: &str = "netqos 1\ninterface eth0 {\n    rate 1000mbit\n    default 30\n    class control-plane {\n        id 0x10\n        rate 200mbit\n        ceil 1000mbit\n        prio 0\n        match dst 10.0.0.10\n    }\n}\n";

#[test]
fn check_exit_statuses() {
    let d = TempDir::new("cli-exit");
    d.write("seed.nq", SEED_002);
    d.write("mbps.nq", "netqos 1\ninterface eth0 {\n    rate 100mbps\n    class a {\n        rate 1mbit\n        default\n    }\n}\n");
    cli(["check", "examples/control-plane.nq"]).code(0);
    cli(["check", "seed.nq"])
        .cwd(&d)
        .code(1)
        .stderr_has("error[NQ001]: default class 1:30 does not exist");
    cli(["check", "mbps.nq"])
        .cwd(&d)
        .code(1)
        .stderr_has("NQ006");
    cli(["check", "nope.nq"]).cwd(&d).code(3);
    cli(["check", "--format", "yaml", "seed.nq"])
        .cwd(&d)
        .code(2);
}

#[test]
fn json_and_github_formats() {
    let d = TempDir::new("cli-formats");
    d.write("seed.nq", SEED_002);
    let out = cli(["check", "--format", "json", "seed.nq"])
        .cwd(&d)
        .code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.output.stdout).expect("valid JSON");
    let first = &v[0];
    assert_eq!(first["code"], "NQ001");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "seed.nq");
    assert_eq!(first["line"], 4);
    assert_eq!(first["column"], 13);
    assert_eq!(first["span"]["length"], 2);
    assert!(first["help"].as_str().unwrap().contains("control-plane"));
    let text = cli(["check", "--format", "github", "seed.nq"])
        .cwd(&d)
        .run()
        .stdout();
    assert!(
        text.starts_with("::error file=seed.nq,line=4,col=13,endLine=4,endColumn=15,title=NQ001 default class missing::"),
        "{text}"
    );
}

#[test]
fn deny_warnings_turns_warnings_into_failure() {
    let d = TempDir::new("cli-deny");
    let src = "netqos 1\nlet unused = 1mbit\ninterface eth0 {\n    rate 1gbit\n    class a {\n        rate 100mbit\n        default\n    }\n}\n";
    d.write("w.nq", src);
    cli(["check", "w.nq"]).cwd(&d).code(0);
    cli(["check", "--deny-warnings", "w.nq"]).cwd(&d).code(1);
}

#[test]
fn variables_from_outside_override_and_are_diagnosed() {
    let d = TempDir::new("cli-vars");
    let src = "netqos 1\nlet uplink = \"eth0\"\ninterface $uplink {\n    rate $speed\n    class a {\n        rate 10%\n        default\n    }\n}\n";
    d.write("p.nq", src);
    // $speed is never given: NQ043 at its use.
    cli(["check", "p.nq"]).cwd(&d).code(1).stderr_has("NQ043");
    // Given on the command line and in a TOML file.
    cli(["check", "--var", "speed=1gbit", "p.nq"])
        .cwd(&d)
        .code(0);
    d.write("host.toml", "speed = \"10gbit\"\nuplink = \"bond0\"\n");
    cli(["check", "--vars", "host.toml", "p.nq"])
        .cwd(&d)
        .code(0);
    // A bad value from outside is reported with where it came from.
    cli([
        "check",
        "--var",
        "uplink=eth0;reboot",
        "--var",
        "speed=1gbit",
        "p.nq",
    ])
    .cwd(&d)
    .code(1)
    .stderr_has("NQ030")
    .stderr_has("--var uplink");
    // Unused and malformed external variables.
    cli([
        "check",
        "--var",
        "speed=1gbit",
        "--var",
        "sped=2gbit",
        "p.nq",
    ])
    .cwd(&d)
    .code(0)
    .stderr_has("NQ045");
    cli(["check", "--var", "cp={", "p.nq"])
        .cwd(&d)
        .code(1)
        .stderr_has("NQ063");
    d.write("bad.toml", "speed = { a = 1 }\n");
    cli(["check", "--vars", "bad.toml", "p.nq"]).cwd(&d).code(1);
}

#[test]
fn fmt_rewrites_and_checks() {
    let d = TempDir::new("cli-fmt");
    let messy =
        "netqos 1\ninterface eth0 {  rate 1gbit\n class a { rate 1mbit  default }  # rest\n}\n";
    d.write("m.nq", messy);
    let out = cli(["fmt", "--check", "m.nq"]).cwd(&d).code(1);
    assert_eq!(out.stdout().trim(), "m.nq");
    assert_eq!(d.read("m.nq"), messy, "--check changes nothing");
    cli(["fmt", "m.nq"]).cwd(&d).code(0);
    assert_eq!(
        d.read("m.nq"),
        "netqos 1\n\ninterface eth0 {\n    rate 1gbit\n    class a {  # rest\n        rate 1mbit\n        default\n    }\n}\n"
    );
    cli(["fmt", "--check", "m.nq"]).cwd(&d).code(0);
    // A file with a syntax error is refused and left untouched.
    d.write("broken.nq", "netqos 1\ninterface eth0 {\n");
    cli(["fmt", "broken.nq"]).cwd(&d).code(1);
    assert_eq!(d.read("broken.nq"), "netqos 1\ninterface eth0 {\n");
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("netqos-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_typo_reports_its_root_cause_first_and_not_what_it_implies() {
    let d = TempDir::new("cli-roots");
    let src = std::fs::read_to_string(root().join("examples/control-plane.nq")).unwrap();
    d.write("typo.nq", src.replace("class bulk", "clas bulk"));
    let out = cli(["check", "--format", "json", "typo.nq"])
        .cwd(&d)
        .code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.output.stdout).unwrap();
    let codes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    // The lost `default` (NQ001) is implied by the unreadable statement.
    assert_eq!(codes, ["NQ041"], "{v:#}");
    // An undefined variable outranks an error earlier in the file.
    d.write(
        "both.nq",
        "netqos 1\ninterface eth0 {\n    rate 1gbit\n    class a {\n        rate 2gbit\n        default\n    }\n}\ninterface eth1 {\n    rate $speed\n    class b {\n        rate 10%\n        default\n    }\n}\n",
    );
    let text = cli(["check", "both.nq"]).cwd(&d).code(1).stderr();
    let first = text.find("NQ043").expect("NQ043 reported");
    assert_eq!(text.find("error["), Some(first - "error[".len()), "{text}");
    assert!(
        !text.contains("NQ064"),
        "implied by the undefined rate: {text}"
    );
}

#[test]
fn unreadable_input_is_a_diagnostic() {
    let d = TempDir::new("cli-input");
    // A stray byte: NQ080 at that byte, exit 1, in every format.
    d.write(
        "ff.nq",
        b"netqos 1\ninterface eth0 {\n    rate 1gbit\xff\n}\n",
    );
    cli(["check", "ff.nq"])
        .cwd(&d)
        .code(1)
        .stderr_has("error[NQ080]: byte 0xff at line 3, column 15 is not UTF-8 text")
        .stderr_has("[ff.nq:3:15]");
    let out = cli(["check", "--format", "json", "ff.nq"]).cwd(&d).code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.output.stdout).unwrap();
    assert_eq!(
        (v[0]["line"].as_u64(), v[0]["column"].as_u64()),
        (Some(3), Some(15))
    );
    cli(["compile", "ff.nq", "-o", "out"])
        .cwd(&d)
        .code(1)
        .stderr_has("NQ080");
    cli(["fmt", "ff.nq"]).cwd(&d).code(1).stderr_has("NQ080");
    cli(["diff", "ff.nq", "ff.nq"])
        .cwd(&d)
        .code(2)
        .stderr_has("NQ080");
    d.write("ff.toml", b"speed = \"1\xe9\"\n");
    cli(["check", "--vars"])
        .arg(d.join("ff.toml"))
        .arg("examples/control-plane.nq")
        .code(1)
        .stderr_has("NQ080");
    // A device or a FIFO is refused at once, without opening it.
    let t0 = std::time::Instant::now();
    cli(["check", "/dev/zero"])
        .code(1)
        .stderr_has("error[NQ082]: policy /dev/zero is a character device");
    cli(["check", "--vars", "/dev/zero", "examples/control-plane.nq"])
        .code(1)
        .stderr_has("NQ082");
    cli(["check", "--conflist", "/dev/zero", "examples/pods.nq"])
        .code(1)
        .stderr_has("error[NQ082]: conflist /dev/zero is a character device");
    let fifo = d.join("fifo.nq");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    cli(["check"]).arg(&fifo).code(1).stderr_has("is a FIFO");
    cli(["check"])
        .arg(d.path())
        .code(1)
        .stderr_has("is a directory");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t0.elapsed()
    );
    // Over 16 MiB, as a file and on stdin: NQ081 with the limit.
    let limit = netqos::input::MAX_INPUT_BYTES as usize;
    let big = format!("netqos 1\n#{}\n", "x".repeat(limit));
    d.write("big.nq", &big);
    cli(["check", "big.nq"])
        .cwd(&d)
        .code(1)
        .stderr_has(&format!(
            "is {} bytes, over netqos's limit of 16 MiB",
            big.len()
        ));
    cli(["check", "-"])
        .stdin(big)
        .code(1)
        .stderr_has("on standard input is over netqos's limit of 16 MiB (16777216 bytes)");
    // Exactly at the limit is read.
    let at = format!("netqos 1\n#{}\n", "x".repeat(limit - 11));
    assert_eq!(at.len(), limit);
    let read = cli(["check", "-"]).stdin(at).run();
    assert!(!read.stderr().contains("NQ081"), "{}", read.stderr());
    // Missing stays an I/O error.
    cli(["check", "missing.nq"]).cwd(&d).code(3);
}

#[test]
fn many_unused_vars_are_summarised_in_one_diagnostic() {
    let d = TempDir::new("cli-manyvars");
    let toml: String = (0..100_000)
        .map(|i| format!("unused_{i} = \"x\"\n"))
        .collect();
    d.write("many.toml", toml);
    let out = cli(["check", "--vars", "many.toml"])
        .arg(root().join("examples/control-plane.nq"))
        .cwd(&d)
        .code(0)
        .stderr_has("100000 variables are given but the policy never uses them");
    assert_eq!(out.stderr().matches("NQ045").count(), 1);
}

#[test]
fn a_diagnostic_on_a_huge_line_is_summarised() {
    let d = TempDir::new("cli-hugeline");
    let word = "x".repeat(2_000_000);
    d.write(
        "huge.nq",
        format!(
            "netqos 1\ninterface eth0 {{ rate 1gbit {word} class a {{ rate 1mbit default }} }}\n"
        ),
    );
    let out = cli(["check", "huge.nq"])
        .cwd(&d)
        .code(1)
        .stderr_has("NQ041");
    let err = out.stderr();
    assert!(err.len() < 4000, "{} bytes printed", err.len());
    assert!(
        err.contains("bytes long, not shown") && err.contains("huge.nq:2:"),
        "{err}"
    );
    // Many diagnostics: the first hundred, then a count.
    let classes: String = (0..300)
        .map(|i| format!("    class c{i} {{ rate 1mbit match dst 10.0.{i}.0/8 }}\n"))
        .collect();
    d.write(
        "many.nq",
        format!("netqos 1\ninterface eth0 {{\n    rate 1gbit\n{classes}    class bulk {{ rate 1mbit default }}\n}}\n"),
    );
    let err = cli(["check", "many.nq"]).cwd(&d).code(1).stderr();
    assert!(
        err.contains("more diagnostics for many.nq not shown"),
        "{}",
        &err[err.len().saturating_sub(500)..]
    );
}

#[test]
fn fmt_check_diff_shows_a_unified_diff() {
    let d = TempDir::new("cli-fmtdiff");
    d.write(
        "m.nq",
        "netqos 1\ninterface eth0 {  rate 1gbit\n class a { rate 1mbit  default }\n}\n",
    );
    let out = cli(["fmt", "--check", "--diff", "m.nq"])
        .cwd(&d)
        .code(1)
        .stdout();
    assert!(
        out.starts_with("--- m.nq\n+++ m.nq (formatted)\n@@ -1,4 +1,9 @@\n"),
        "{out}"
    );
    assert!(
        out.contains("\n-interface eth0 {  rate 1gbit\n") && out.contains("\n+    rate 1gbit\n"),
        "{out}"
    );
    cli(["fmt", "--diff", "m.nq"])
        .cwd(&d)
        .code(2)
        .stderr_has("--check");
    cli(["fmt", "--check", "--diff", "examples/pods.nq"]).code(0);
}

#[test]
fn compile_without_an_output_says_what_to_write() {
    cli(["compile", "examples/pods.nq"])
        .code(2)
        .stderr_has("netqos compile examples/pods.nq -o out/")
        .stderr_has("-o - --emit tree");
}

#[test]
fn the_tree_speaks_the_policy() {
    let tree = cli([
        "compile",
        "examples/control-plane.nq",
        "-o",
        "-",
        "--emit",
        "tree",
    ])
    .code(0)
    .stdout();
    assert!(
        tree.contains(
            "◂ tcp dst 10.0.0.10, 10.0.0.11, 10.0.0.12 dport 2379-2380, 6443, 9345, 10250\n"
        ),
        "{tree}"
    );
    assert!(
        tree.contains("1:1aa5 control-plane  rate 200 Mbit/s  ceil 1 Gbit/s"),
        "{tree}"
    );
    assert!(tree.contains("◂ pods\n"), "{tree}");
    assert!(tree.contains("bfifo limit 2500 kB"), "{tree}");
    assert!(
        tree.contains("ids as `tc class show dev eth0` prints them"),
        "{tree}"
    );
    assert!(!tree.contains("u32"), "{tree}");
    let verbose = cli([
        "compile",
        "-v",
        "examples/control-plane.nq",
        "-o",
        "-",
        "--emit",
        "tree",
    ])
    .code(0)
    .stdout();
    assert!(verbose.contains("u32 ip protocol 6 0xff"), "{verbose}");
    assert!(
        verbose.contains("nft forward: ip saddr 10.42.0.0/16\n"),
        "{verbose}"
    );
}
