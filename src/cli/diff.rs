//! `netqos diff OLD NEW`: the semantic difference of two policies for PR review, as text,
//! JSON or GitHub annotations. Exit 0 when equal, 1 when different (like diff(1)).

use std::path::Path;

use super::check::{external_vars, print, read_source};
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

/// Reads and checks one side; diagnostics go to stderr. `Err` is the exit status.
fn load(path: &Path, vars: &ExternalVars, ui: Ui) -> Result<(Source, Model), Exit> {
    let src = match read_source(path) {
        Ok(s) => s,
        // Like a policy with errors: trouble (2), as diff(1) has it.
        Err(e) => {
            return Err(match e.report(ui) {
                Exit::Invalid => Exit::Usage,
                other => other,
            });
        }
    };
    let checked = netqos::check_source(&src.text, vars);
    // Only errors stop a comparison; warnings are `check`'s business (a diff stays quiet
    // for a valid policy, e.g. one with pod limits and their NQ066).
    let mut diags = checked.diagnostics.into_sorted();
    diags.retain(|d| d.is_error());
    print(&diags, &src, Format::Human, ui, &mut Vec::new());
    match checked.model {
        Some(m) => Ok((src, m)),
        None => {
            eprintln!("netqos: {} has errors: fix them before comparing", src.name);
            Err(Exit::Usage)
        }
    }
}

pub fn run(old: &Path, new: &Path, format: DiffFormat, var_args: &VarArgs, ui: Ui) -> Exit {
    let vars = match external_vars(var_args) {
        Ok(v) => v,
        Err((diags, exit)) => {
            let src = Source {
                name: "<command line>".into(),
                text: String::new(),
            };
            print(&diags, &src, Format::Human, ui, &mut Vec::new());
            return if exit == Exit::Invalid {
                Exit::Usage
            } else {
                exit
            };
        }
    };
    if old == Path::new("-") && new == Path::new("-") {
        eprintln!("netqos: only one side can be read from stdin");
        return Exit::Usage;
    }
    let (old_src, old_model) = match load(old, &vars, ui) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let (new_src, new_model) = match load(new, &vars, ui) {
        Ok(v) => v,
        Err(e) => return e,
    };
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
    if d.is_empty() {
        Exit::Ok
    } else {
        Exit::Invalid
    }
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
        out.push_str(&format!("{scope}:\n"));
        for c in d.changes.iter().filter(|c| c.scope == scope) {
            out.push_str(&format!("  {}\n", c.text));
        }
    }
    if !d.node.is_empty() {
        out.push_str("on the node:\n");
        for n in &d.node {
            if n.device.is_empty() {
                out.push_str(&format!("  {}\n", n.text));
            } else {
                out.push_str(&format!("  {}: {}\n", n.device, n.text));
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
        out.push_str(&format!(
            "::notice {}::{}\n",
            props.join(","),
            escape_data(&c.text)
        ));
    }
    for n in &d.node {
        let title = if n.device.is_empty() {
            "netqos diff: on the node".to_string()
        } else {
            format!("netqos diff: on the node, {}", n.device)
        };
        out.push_str(&format!(
            "::notice file={},title={}::{}\n",
            escape_property(new),
            escape_property(&title),
            escape_data(&n.text)
        ));
    }
    out
}
