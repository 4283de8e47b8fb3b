//! `netqos explain`: every code has an explanation whose bad example triggers the code and
//! whose fixed example is clean.

use crate::support::*;
use netqos::codes::Code;
use netqos::vars::{ExternalVars, parse_var_arg};

/// The body of the fenced block opened by "```nq <tag>".
fn block<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    lang_block(text, "nq", tag)
}

/// The body of the fenced block opened by "```<lang> <tag>".
fn lang_block<'a>(text: &'a str, lang: &str, tag: &str) -> Option<&'a str> {
    let open = format!("```{lang} {tag}\n");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find("```")? + start;
    Some(&text[start..end])
}

/// Variables from a leading `# vars: a=b c=d` line.
fn vars_of(src: &str) -> Result<ExternalVars, netqos::diagnostic::Diagnostic> {
    let mut vars = ExternalVars::default();
    if let Some(line) = src.lines().next().and_then(|l| l.strip_prefix("# vars:")) {
        for pair in line.split_whitespace() {
            vars.vars.push(parse_var_arg(pair)?);
        }
    }
    Ok(vars)
}

#[test]
fn every_code_is_explained_with_working_examples() {
    for code in Code::ALL {
        let text = code.explanation();
        assert!(
            text.starts_with(&format!("{code}: ")),
            "{code}: explanation must start with its code and title"
        );
        if let (Some(bad), Some(fixed)) = (
            lang_block(text, "json", "bad"),
            lang_block(text, "json", "fixed"),
        ) {
            // Conflist codes: the examples are conflists, read for a policy with `burst`
            // (which chains the netqos entry) as well.
            let burst = netqos::cni::burst::PodBurst::Duration { us: 20_000 };
            let read = |text: &str| {
                let (o, mut d) = netqos::cni::conflist::analyse(text, true);
                let o = o.and_then(|o| {
                    netqos::cni::netqos_entry::chain(text, o, &burst)
                        .map_err(|e| d.push(e))
                        .ok()
                });
                (o.is_some(), d)
            };
            let (_, d) = read(bad);
            assert!(
                d.iter().any(|d| d.code == *code),
                "{code}: bad conflist gives {d:?}"
            );
            let (ok, d) = read(fixed);
            assert!(d.is_empty() && ok, "{code}: fixed conflist gives {d:?}");
            continue;
        }
        if lang_block(text, "sh", "bad").is_some() {
            // NQ037 is about the command line (`cni::output_into_the_cni_directory_is_refused`),
            // NQ080–NQ082 about the input's bytes (`cli::unreadable_input_is_a_diagnostic`).
            // NQ100–NQ119 are `doctor`'s findings about a node (`doctor` tests).
            assert!(
                matches!(code, Code::NQ037 | Code::NQ080 | Code::NQ081 | Code::NQ082)
                    || (100..=119).contains(&code.number()),
                "{code}: only NQ037, NQ080–NQ082 and doctor's NQ100–NQ119 have command-line examples"
            );
            assert!(lang_block(text, "sh", "fixed").is_some());
            continue;
        }
        let bad = block(text, "bad").unwrap_or_else(|| panic!("{code}: no bad example"));
        let fixed = block(text, "fixed").unwrap_or_else(|| panic!("{code}: no fixed example"));
        let bad_codes: Vec<Code> = match vars_of(bad) {
            Ok(vars) => diagnose(bad, &vars).iter().map(|d| d.code).collect(),
            Err(d) => vec![d.code],
        };
        assert!(
            bad_codes.contains(code),
            "{code}: bad example gives {bad_codes:?}"
        );
        let vars = vars_of(fixed).unwrap_or_else(|d| panic!("{code}: fixed vars: {}", d.message));
        let mut diags = diagnose(fixed, &vars);
        // Fixed examples with pod limits keep NQ066 (see `check_fixtures::ACCEPTED`), except
        // in NQ066's own explanation.
        diags.retain(|d| d.code == *code || !crate::check_fixtures::ACCEPTED.contains(&d.code));
        // NQ066's fix (`burst`) keeps NQ066 as an info that names the bucket the pods get.
        diags.retain(|d| {
            !(d.code == *code
                && d.severity == netqos::diagnostic::Severity::Info
                && *code == Code::NQ066)
        });
        assert!(
            diags.is_empty(),
            "{code}: fixed example is not clean:\n{}",
            render("fixed", fixed, &diags)
        );
    }
}

#[test]
fn explain_command_prints_the_text_and_refuses_unknown_codes() {
    let out = cli(["explain", "nq10"]).code(0);
    assert!(out.stdout().starts_with("NQ010: "));
    cli(["explain", "NQ999"]).code(2);
    let listing = cli(["explain"]).run().stdout();
    assert_eq!(listing.lines().count(), Code::ALL.len());
}
