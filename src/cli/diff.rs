//! `netqos diff OLD NEW`: the semantic difference of two policies for PR review, as text,
//! JSON or GitHub annotations. Exit 0 when equal, 1 when different (like diff(1)).

use std::fmt::Write as _;

use std::path::Path;

use super::check::{external_vars, print, read_source};
use super::error::Error;
use super::{Exit, Format, Ui, VarArgs};

/// How the difference is printed (standard output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// Plain text grouped by interface and class, then the changes on the node; nothing
    /// when the policies are equal.
    Human,
    /// One JSON object: `equal`, `changes` (scope, text, line, old_file) and `node`
    /// (device, id, text).
    Json,
    /// GitHub Actions `::notice` commands, one per change, on the changed line.
    Github,
}
use netqos::diff::{Diff, diff};
use netqos::model::Model;
use netqos::report::{Source, escape_data, escape_property};
use netqos::vars::ExternalVars;

/// Reads and checks one side; diagnostics go to stderr.
fn load(path: &Path, vars: &ExternalVars, ui: Ui) -> Result<(Source, Model), Error> {
    let src = read_source(path).map_err(Error::DiffInput)?;
    let checked = netqos::check_source(&src.text, vars);
    // Only errors stop a comparison; warnings are `check`'s business (a diff stays quiet
    // for a valid policy, e.g. one with pod limits and their NQ066).
    let mut diags = checked.diagnostics.into_sorted();
    diags.retain(netqos::diagnostic::Diagnostic::is_error);
    print(&diags, &src, Format::Human, ui, &mut Vec::new());
    match checked.model {
        Some(m) => Ok((src, m)),
        None => Err(Error::DiffSideInvalid { name: src.name }),
    }
}

pub fn run(
    old: &Path,
    new: &Path,
    format: DiffFormat,
    var_args: &VarArgs,
    ui: Ui,
) -> Result<Exit, Error> {
    let vars = match external_vars(var_args) {
        Ok(v) => v,
        Err((diags, exit)) => {
            let src = Source {
                name: "<command line>".into(),
                text: String::new(),
            };
            print(&diags, &src, Format::Human, ui, &mut Vec::new());
            // Bad variables are a usage error here: 1 means "the policies differ".
            let exit = if exit == Exit::Invalid {
                Exit::Usage
            } else {
                exit
            };
            return Err(Error::Diagnosed(exit));
        }
    };
    if old == Path::new("-") && new == Path::new("-") {
        return Err(Error::TwoStdins);
    }
    let (old_src, old_model) = load(old, &vars, ui)?;
    let (new_src, new_model) = load(new, &vars, ui)?;
    let d = diff(&old_model, &new_model);
    if !ui.quiet {
        match format {
            DiffFormat::Human => out!("{}", human(&d)),
            DiffFormat::Json => out!("{}", json(&d, &old_src.name, &new_src.name)),
            DiffFormat::Github => out!("{}", github(&d, &old_src.name, &new_src.name)),
        }
    }
    if ui.verbose {
        let what = if d.is_empty() {
            "equal".to_string()
        } else {
            format!(
                "{} policy changes, {} on the node",
                d.changes.len(),
                d.node.len()
            )
        };
        eprintln!("netqos: {} → {}: {what}", old_src.name, new_src.name);
    }
    Ok(if d.is_empty() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}

/// Changes grouped under their scope, then what happens on the node. Empty when equal.
pub fn human(d: &Diff) -> String {
    let mut out = String::new();
    let mut scopes: Vec<&str> = Vec::new();
    for c in &d.changes {
        if !scopes.contains(&c.scope.as_str()) {
            scopes.push(&c.scope);
        }
    }
    for scope in scopes {
        let _ = writeln!(out, "{scope}:");
        for c in d.changes.iter().filter(|c| c.scope == scope) {
            let _ = writeln!(out, "  {}", c.text);
        }
    }
    if !d.node.is_empty() {
        out.push_str("on the node:\n");
        for n in &d.node {
            if n.device.is_empty() {
                let _ = writeln!(out, "  {}", n.text);
            } else {
                let _ = writeln!(out, "  {}: {}", n.device, n.text);
            }
        }
    }
    out
}

fn json(d: &Diff, old: &str, new: &str) -> String {
    let v = serde_json::json!({
        "old": old,
        "new": new,
        "equal": d.is_empty(),
        "changes": d.changes,
        "node": d.node,
    });
    serde_json::to_string_pretty(&v)
        .map_or_else(|e| format!("{{\"error\": \"{e}\"}}\n"), |s| s + "\n")
}

/// One `::notice` per change, on the new file's line (the old file's for a removal), so the
/// changes appear as annotations on the pull request.
fn github(d: &Diff, old: &str, new: &str) -> String {
    let mut out = String::new();
    for c in &d.changes {
        // A line of an old policy read from stdin has no file to point at.
        let (file, line) = match (c.old_file, old) {
            (true, "-") => (new, None),
            (true, _) => (old, c.line),
            (false, _) => (new, c.line),
        };
        let mut props = vec![format!("file={}", escape_property(file))];
        if let Some(l) = line {
            props.push(format!("line={l}"));
        }
        props.push(format!(
            "title={}",
            escape_property(&format!("netqos diff: {}", c.scope))
        ));
        let _ = writeln!(
            out,
            "::notice {}::{}",
            props.join(","),
            escape_data(&c.text)
        );
    }
    for n in &d.node {
        let title = if n.device.is_empty() {
            "netqos diff: on the node".to_string()
        } else {
            format!("netqos diff: on the node, {}", n.device)
        };
        let _ = writeln!(
            out,
            "::notice file={},title={}::{}",
            escape_property(new),
            escape_property(&title),
            escape_data(&n.text)
        );
    }
    out
}
