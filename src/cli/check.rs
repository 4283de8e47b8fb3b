//! `netqos check FILE…`: diagnostics only.

use std::path::{Path, PathBuf};

use super::input::Unreadable;

use super::{Exit, Format, NodeArgs, Ui, VarArgs};
use netqos::diagnostic::{Diagnostic, Severity};
use netqos::report::{self, Source};
use netqos::vars::{ExternalVars, parse_var_arg, parse_vars_toml};

/// Reads `--vars` and `--var` into external variables, or the diagnostics/exit explaining why not.
pub fn external_vars(args: &VarArgs) -> Result<ExternalVars, (Vec<Diagnostic>, Exit)> {
    let mut vars = ExternalVars::default();
    let mut diags = Vec::new();
    if let Some(path) = &args.vars_file {
        match super::input::read_vars(path) {
            Ok(text) => match parse_vars_toml(&text, &path.display().to_string()) {
                Ok(v) => vars.vars.extend(v),
                Err(d) => diags.push(d),
            },
            Err(Unreadable::Invalid(b)) => return Err((vec![b.1], Exit::Invalid)),
            Err(Unreadable::Io(message)) => {
                eprintln!("netqos: {message}");
                return Err((Vec::new(), Exit::Io));
            }
        }
    }
    for arg in &args.vars {
        match parse_var_arg(arg) {
            Ok(v) => vars.vars.push(v),
            Err(d) => diags.push(d),
        }
    }
    if diags.is_empty() {
        Ok(vars)
    } else {
        Err((diags, Exit::Invalid))
    }
}

/// Reads a policy file (`-` is stdin), bounded (see `input`).
pub fn read_source(path: &Path) -> Result<Source, Unreadable> {
    super::input::read_policy(path)
}

/// Prints diagnostics of one source in the chosen format.
pub fn print(
    diags: &[Diagnostic],
    src: &Source,
    format: Format,
    ui: Ui,
    json_acc: &mut Vec<report::JsonDiagnostic>,
) {
    let shown: Vec<Diagnostic> = diags
        .iter()
        .filter(|d| !ui.quiet || d.severity == Severity::Error)
        .cloned()
        .collect();
    match format {
        Format::Human => eprint!("{}", report::human(&shown, src, ui.color)),
        Format::Github => out!("{}", report::github(&shown, src)),
        Format::Json => json_acc.extend(report::json_values(&shown, src)),
    }
}

pub fn run(
    files: &[PathBuf],
    format: Format,
    deny_warnings: bool,
    var_args: &VarArgs,
    node: &NodeArgs,
    ui: Ui,
) -> Exit {
    let mut json = Vec::new();
    let allowed = match node.allowed() {
        Ok(a) => a,
        Err(e) => return e,
    };
    let conflist = match super::cni::read(node.conflist.as_deref(), ui) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let vars = match external_vars(var_args) {
        Ok(v) => v,
        Err((diags, exit)) => {
            let src = Source {
                name: "<command line>".to_string(),
                text: String::new(),
            };
            print(&diags, &src, format, ui, &mut json);
            finish_json(format, &json);
            return exit;
        }
    };
    let mut exit = Exit::Ok;
    let (mut errors, mut warnings) = (0usize, 0usize);
    for path in files {
        let src = match read_or_print(path, format, ui, &mut json) {
            Ok(s) => s,
            Err(e) => {
                errors += usize::from(e == Exit::Invalid);
                exit = exit.max(e);
                continue;
            }
        };
        let checked = netqos::check_source(&src.text, &vars);
        let mut diags = checked.diagnostics.into_sorted();
        diags.retain(|d| !allowed.contains(&d.code));
        let mut cni_diags = conflist.as_ref().map_or_else(Vec::new, |c| {
            super::cni::diagnose(checked.model.as_ref().and_then(|m| m.pods.as_ref()), c)
        });
        cni_diags.retain(|d| !allowed.contains(&d.code));
        let counted = || diags.iter().chain(&cni_diags);
        let e = counted().filter(|d| d.severity == Severity::Error).count();
        let w = counted()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        errors += e;
        warnings += w;
        print(&diags, &src, format, ui, &mut json);
        if let Some(c) = &conflist {
            print(&cni_diags, c, format, ui, &mut json);
        }
        if e > 0 || (deny_warnings && w > 0) {
            exit = exit.max(Exit::Invalid);
        }
        if format == Format::Human
            && !ui.quiet
            && (ui.verbose || (diags.is_empty() && cni_diags.is_empty()))
        {
            eprintln!("{}: {}", src.name, summary(e, w));
        }
    }
    finish_json(format, &json);
    if format == Format::Human && !ui.quiet && (errors > 0 || warnings > 0) {
        let denied = if deny_warnings && warnings > 0 && errors == 0 {
            " (denied by --deny-warnings)"
        } else {
            ""
        };
        eprintln!("netqos: {}{denied}", summary(errors, warnings));
    }
    exit
}

/// Reads one policy; an unreadable one is reported (its NQ080–NQ082 in `format`) and its
/// exit status returned.
fn read_or_print(
    path: &Path,
    format: Format,
    ui: Ui,
    json: &mut Vec<report::JsonDiagnostic>,
) -> Result<Source, Exit> {
    match read_source(path) {
        Ok(s) => Ok(s),
        Err(Unreadable::Io(message)) => {
            eprintln!("netqos: {message}");
            Err(Exit::Io)
        }
        Err(Unreadable::Invalid(b)) => {
            let (src, d) = *b;
            print(&[d], &src, format, ui, json);
            Err(Exit::Invalid)
        }
    }
}

pub fn finish_json(format: Format, json: &[report::JsonDiagnostic]) {
    if format == Format::Json {
        match serde_json::to_string_pretty(json) {
            Ok(s) => outln!("{s}"),
            Err(e) => eprintln!("netqos: cannot write JSON: {e}"),
        }
    }
}

fn summary(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => "ok".to_string(),
        (e, 0) => plural(e, "error"),
        (0, w) => plural(w, "warning"),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    }
}
