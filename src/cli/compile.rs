//! `netqos compile FILE -o DIR`: checks, lowers and writes the artefacts (only those that
//! changed, each by atomic rename), or prints one with `-o -`.

use std::path::{Path, PathBuf};

use super::check::{external_vars, print, read_source};
use super::{Exit, Format, Ui, VarArgs, write_atomic};
use netqos::backend::{self, Templates};
use netqos::diagnostic::Severity;

/// File name of each artefact kind.
fn file_name(kind: &str) -> &'static str {
    match kind {
        "tc" => "netqos-apply.sh",
        "rollback" => "netqos-rollback.sh",
        "plan" => "plan.json",
        "cloud-init" => "cloud-init.yaml",
        "systemd" => "netqos.service",
        _ => "tree.txt",
    }
}

fn load_templates(dir: Option<&Path>) -> Result<Templates, Exit> {
    let Some(dir) = dir else {
        return Ok(Templates::default());
    };
    let read = |name: &str| -> Result<Option<String>, Exit> {
        let p = dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                eprintln!("netqos: cannot read template {}: {e}", p.display());
                Err(Exit::Io)
            }
        }
    };
    Ok(Templates {
        apply: read("apply.sh.j2")?,
        rollback: read("rollback.sh.j2")?,
    })
}

pub struct Args<'a> {
    pub file: &'a Path,
    pub out: &'a Path,
    pub emit: &'a [String],
    pub templates: Option<&'a Path>,
    pub vars: &'a VarArgs,
    pub deny_warnings: bool,
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    let kinds: Vec<String> = if a.emit.is_empty() {
        backend::KINDS.iter().map(|k| (*k).to_string()).collect()
    } else {
        a.emit
            .iter()
            .flat_map(|e| e.split(','))
            .map(|k| k.trim().to_string())
            .collect()
    };
    if let Some(bad) = kinds.iter().find(|k| !backend::KINDS.contains(&k.as_str())) {
        eprintln!(
            "netqos: unknown artefact kind `{bad}`; kinds: {}",
            backend::KINDS.join(", ")
        );
        return Exit::Usage;
    }
    let to_stdout = a.out == Path::new("-");
    if to_stdout && kinds.len() != 1 {
        eprintln!("netqos: `-o -` prints one artefact: choose it with `--emit KIND`");
        return Exit::Usage;
    }
    let mut json = Vec::new();
    let vars = match external_vars(a.vars) {
        Ok(v) => v,
        Err((diags, exit)) => {
            let src = netqos::report::Source {
                name: "<command line>".into(),
                text: String::new(),
            };
            print(&diags, &src, Format::Human, ui, &mut json);
            return exit;
        }
    };
    let src = match read_source(a.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netqos: cannot read {}: {e}", a.file.display());
            return Exit::Io;
        }
    };
    let checked = netqos::check_source(&src.text, &vars);
    let diags = checked.diagnostics.into_sorted();
    print(&diags, &src, Format::Human, ui, &mut json);
    let warned = diags.iter().any(|d| d.severity == Severity::Warning);
    let Some(model) = checked.model.filter(|_| !(a.deny_warnings && warned)) else {
        eprintln!("netqos: {} not compiled: fix the errors above", src.name);
        return Exit::Invalid;
    };
    let templates = match load_templates(a.templates) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let plan = netqos::lower::lower(&model);
    let source_name = a
        .file
        .file_name()
        .map_or("policy".into(), |n| n.to_string_lossy().into_owned());
    let mut outputs: Vec<(String, String)> = Vec::new();
    for kind in &kinds {
        let text = match kind.as_str() {
            "tc" => backend::tc_script(&plan, &source_name, &templates),
            "rollback" => backend::rollback_script(&plan, &source_name, &templates),
            "plan" => Ok(backend::plan_json(&plan)),
            "cloud-init" => backend::node_files(&plan, &source_name, &templates)
                .and_then(|files| backend::cloud_config(&files, &source_name)),
            "systemd" => backend::unit(&plan, &source_name),
            _ => Ok(backend::tree(&plan)),
        };
        match text {
            Ok(t) => outputs.push((kind.clone(), t)),
            Err(e) => {
                eprintln!("netqos: template for `{kind}` failed: {e}");
                return Exit::Usage;
            }
        }
    }
    if to_stdout {
        for (_, t) in &outputs {
            out!("{t}");
        }
        return Exit::Ok;
    }
    if let Err(e) = std::fs::create_dir_all(a.out) {
        eprintln!("netqos: cannot create {}: {e}", a.out.display());
        return Exit::Io;
    }
    for (kind, text) in outputs {
        let path: PathBuf = a.out.join(file_name(&kind));
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            if ui.verbose {
                eprintln!("unchanged {}", path.display());
            }
            continue;
        }
        if let Err(e) = write_atomic(&path, text.as_bytes()) {
            eprintln!("netqos: cannot write {}: {e}", path.display());
            return Exit::Io;
        }
        if kind == "tc" || kind == "rollback" {
            set_executable(&path);
        }
        if !ui.quiet {
            outln!("wrote {}", path.display());
        }
    }
    Exit::Ok
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mut p = meta.permissions();
        p.set_mode(p.mode() | 0o755);
        let _ = std::fs::set_permissions(path, p);
    }
}
