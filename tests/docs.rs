//! `docs/language.md`, the language guide: every statement and match field the reference
//! (`man/netqos.5`, STATEMENTS) documents is explained in it, every code it names exists,
//! and every `nq` example in it checks clean. The README links it first.

use crate::support::*;
use netqos::codes::Code;
use netqos::vars::ExternalVars;

fn guide() -> String {
    std::fs::read_to_string(root().join("docs/language.md")).unwrap()
}

/// Splits a roff macro's arguments like roff does: quoted strings or words.
fn roff_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            out.push(chars.by_ref().take_while(|&c| c != '"').collect());
        } else {
            out.push(chars.by_ref().take_while(|&c| c != ' ').collect());
        }
    }
    out
}

/// The bold words of a `.B`/`.BR`/`.BI` heading: the keywords it documents. Italic
/// arguments are placeholders; `\fR…\fP` inside a bold argument is punctuation.
fn keywords(heading: &str) -> Vec<String> {
    let Some((mac, rest)) = heading.split_once(' ') else {
        return Vec::new();
    };
    let bold_at: fn(usize) -> bool = match mac {
        ".B" => |_| true,
        ".BR" | ".BI" => |i| i % 2 == 0,
        ".IR" => |i| i % 2 == 1,
        _ => return Vec::new(),
    };
    // `\(dq` and the like are special characters, not words.
    let mut plain = String::new();
    let mut it = rest.split("\\(");
    plain.push_str(it.next().unwrap_or(""));
    for piece in it {
        plain.push_str(piece.get(2..).unwrap_or(""));
    }
    let mut out = Vec::new();
    for arg in roff_args(&plain)
        .iter()
        .enumerate()
        .filter(|(i, _)| bold_at(*i))
        .map(|(_, a)| a)
    {
        let mut bold = String::new();
        let mut roman = false;
        let mut it = arg.split("\\f");
        bold.push_str(it.next().unwrap_or(""));
        for piece in it {
            let (font, text) = piece.split_at(1.min(piece.len()));
            roman = match font {
                "R" | "I" => true,
                "P" | "B" => false,
                _ => roman,
            };
            bold.push(' ');
            if !roman {
                bold.push_str(text);
            }
        }
        out.extend(
            bold.replace("\\-", "-")
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()) && w.len() > 1)
                .map(str::to_string),
        );
    }
    out
}

#[test]
fn every_statement_and_match_field_of_netqos_5_is_in_the_guide() {
    let page = std::fs::read_to_string(root().join("man/netqos.5")).unwrap();
    let start = page.find(".SH STATEMENTS").unwrap();
    let end = start + page[start..].find(".SH UNITS").unwrap();
    let lines: Vec<&str> = page[start..end].lines().collect();
    let guide = guide();
    let mut checked = Vec::new();
    for pair in lines.windows(2).filter(|w| w[0] == ".TP") {
        for word in keywords(pair[1]) {
            assert!(
                guide.contains(&format!("`{word}")) || guide.contains(&format!(" {word} ")),
                "`{word}` (netqos.5: {}) is not explained in docs/language.md",
                pair[1]
            );
            checked.push(word);
        }
    }
    for must in [
        "netqos",
        "let",
        "allow",
        "interface",
        "pods",
        "rate",
        "ceil",
        "prio",
        "match",
    ] {
        assert!(
            checked.iter().any(|w| w == must),
            "{must} not found in netqos.5: {checked:?}"
        );
    }
    for must in [
        "src", "dst", "sport", "dport", "tcp", "udp", "icmp", "tbf", "fq_codel", "cni", "limit",
        "ifb", "r2q", "quantum",
    ] {
        assert!(
            checked.iter().any(|w| w == must),
            "{must} not found in netqos.5: {checked:?}"
        );
    }
}

#[test]
fn every_code_the_guide_names_exists() {
    let guide = guide();
    for (i, _) in guide.match_indices("NQ") {
        let digits: String = guide[i + 2..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.len() == 3 {
            assert!(
                Code::parse(&digits).is_some(),
                "NQ{digits} in docs/language.md"
            );
        }
    }
}

#[test]
fn every_example_in_the_guide_checks_clean() {
    let guide = guide();
    let mut n = 0;
    let mut rest = guide.as_str();
    while let Some(at) = rest.find("```nq\n") {
        let body = &rest[at + 6..];
        let end = body.find("```").expect("closed block");
        let src = &body[..end];
        let diags = diagnose(src, &ExternalVars::default());
        assert!(
            diags.is_empty(),
            "example {n}:\n{}",
            render("docs/language.md", src, &diags)
        );
        assert_eq!(
            netqos::format::format(src).as_deref(),
            Ok(src),
            "example {n} is not in canonical format"
        );
        n += 1;
        rest = &body[end + 3..];
    }
    assert!(n >= 8, "{n} examples");
}

#[test]
fn the_readme_links_the_guide_first_and_ci_runs_its_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first_link = readme.find("](").expect("a link");
    assert!(
        readme[first_link..].starts_with("](docs/language.md)"),
        "the guide is the first link"
    );
    // Every local link points at a file of the repository.
    for (i, _) in readme.match_indices("](") {
        let target: String = readme[i + 2..].chars().take_while(|&c| c != ')').collect();
        let path = target.split('#').next().unwrap();
        if !path.is_empty() && !path.contains("://") {
            assert!(root().join(path).exists(), "README links {target}");
        }
    }
    // The quick start: two commands, the second the test command `.ci/run` runs exactly.
    let start = readme.find("## Quick start").unwrap();
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").unwrap() + 6..];
    let commands: Vec<&str> = body[..body.find("```").unwrap()].lines().collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0].starts_with("cargo run -- compile examples/"),
        "{}",
        commands[0]
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l == commands[1]),
        ".ci/run must run `{}`",
        commands[1]
    );
}
