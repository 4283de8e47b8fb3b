//! `netqos check FILE…`: diagnostics only.

use std::path::{Path, PathBuf};

use super::error::{Error, report};
use super::input::Unreadable;
use super::{Exit, Format, NodeArgs, Ui, VarArgs};
use netqos::diagnostic::{Diagnostic, Severity};
use netqos::report::{self, Source};
use netqos::vars::{ExternalVars, parse_var_arg, parse_vars_toml};

/// Reads `--vars` and `--var` into external variables, or the diagnostics/exit explaining why not.
pub fn external_vars(args: &VarArgs) -> Result<ExternalVars, (Vec<Diagnostic>, Exit)> {
    let text = match &args.vars_file {
        Some(path) => match super::input::read_vars(path) {
            Ok(text) => Some(text),
            Err(Unreadable::Invalid(b)) => return Err((vec![b.1], Exit::Invalid)),
            Err(Unreadable::Io(message)) => {
                eprintln!("netqos: {message}");
                return Err((Vec::new(), Exit::Io));
            }
        },
        None => None,
    };
    external_vars_of(args, text.as_deref())
}

/// `external_vars` with the vars file already read (`text`; `None`: no `--vars`).
pub fn external_vars_of(
    args: &VarArgs,
    text: Option<&str>,
) -> Result<ExternalVars, (Vec<Diagnostic>, Exit)> {
    let mut vars = ExternalVars::default();
    let mut diags = Vec::new();
    if let (Some(path), Some(text)) = (&args.vars_file, text) {
        match parse_vars_toml(text, &path.display().to_string()) {
            Ok(v) => vars.vars.extend(v),
            Err(d) => diags.push(d),
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
) -> Result<Exit, Error> {
    let mut json = Vec::new();
    let allowed = node.allowed()?;
    let conflist = super::cni::read(node.conflist.as_deref())?;
    let vars = match external_vars(var_args) {
        Ok(v) => v,
        Err((diags, exit)) => {
            let src = Source {
                name: "<command line>".to_string(),
                text: String::new(),
            };
            print(&diags, &src, format, ui, &mut json);
            finish_json(format, &json);
            return Err(Error::Diagnosed(exit));
        }
    };
    let checker = Checker {
        vars: &vars,
        allowed: &allowed,
        conflist: conflist.as_ref(),
        format,
        ui,
    };
    let mut exit = Exit::Ok;
    let (mut errors, mut warnings) = (0usize, 0usize);
    for path in files {
        let src = match read_source(path) {
            Ok(s) => s,
            Err(Unreadable::Io(message)) => {
                exit = exit.max(report(Error::Input(Unreadable::Io(message)), ui));
                continue;
            }
            // An unusable file is one more error, printed in the chosen format.
            Err(Unreadable::Invalid(b)) => {
                let (src, d) = *b;
                print(&[d], &src, format, ui, &mut json);
                errors += 1;
                exit = exit.max(Exit::Invalid);
                continue;
            }
        };
        let (e, w) = checker.file(&src, &mut json);
        errors += e;
        warnings += w;
        if e > 0 || (deny_warnings && w > 0) {
            exit = exit.max(Exit::Invalid);
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
    Ok(exit)
}

/// What checking each file needs.
struct Checker<'a> {
    vars: &'a ExternalVars,
    allowed: &'a [netqos::codes::Code],
    conflist: Option<&'a Source>,
    format: Format,
    ui: Ui,
}

impl Checker<'_> {
    /// Checks one policy (and the conflist against it) and prints the diagnostics: the
    /// numbers of errors and warnings.
    fn file(&self, src: &Source, json: &mut Vec<report::JsonDiagnostic>) -> (usize, usize) {
        let checked = netqos::check_source(&src.text, self.vars);
        let mut diags = checked.diagnostics.into_sorted();
        diags.retain(|d| !self.allowed.contains(&d.code));
        let pods = checked.model.as_ref().and_then(|m| m.pods.as_ref());
        let mut cni_diags = self
            .conflist
            .map_or_else(Vec::new, |c| super::cni::diagnose(pods, c));
        cni_diags.retain(|d| !self.allowed.contains(&d.code));
        let count = |s: Severity| {
            diags
                .iter()
                .chain(&cni_diags)
                .filter(|d| d.severity == s)
                .count()
        };
        let (e, w) = (count(Severity::Error), count(Severity::Warning));
        print(&diags, src, self.format, self.ui, json);
        if let Some(c) = self.conflist {
            print(&cni_diags, c, self.format, self.ui, json);
        }
        let ui = self.ui;
        if self.format == Format::Human
            && !ui.quiet
            && (ui.verbose || (diags.is_empty() && cni_diags.is_empty()))
        {
            eprintln!("{}: {}", src.name, summary(e, w));
        }
        super::discard(checked.model);
        (e, w)
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
