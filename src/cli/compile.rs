//! `netqos compile FILE -o DIR`: checks, lowers and writes the artefacts (only those that
//! changed, each by atomic rename), or prints one with `-o -`.

use std::path::{Path, PathBuf};

use super::check::{external_vars, print, read_source};
use super::{Exit, Format, NodeArgs, Ui, VarArgs, write_atomic};
use netqos::backend::{self, Templates};
use netqos::diagnostic::Severity;

/// File name of each artefact kind.
fn file_name(kind: &str) -> &'static str {
    match kind {
        "tc" => "netqos-apply.sh",
        "rollback" => "netqos-rollback.sh",
        "plan" => "plan.json",
        "annotations" => "annotations.yaml",
        "cloud-init" => "cloud-init.yaml",
        "systemd" => "netqos.service",
        "svg" => "tree.svg",
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
    pub node: &'a NodeArgs,
    pub deny_warnings: bool,
}

/// `compile` without `-o`: what to write instead of clap's generic "required argument".
pub fn no_output(file: &Path) -> Exit {
    let f = file.display();
    eprintln!(
        "netqos: compile needs to know where the artefacts go:\n  \
         netqos compile {f} -o out/              writes every artefact into out/\n  \
         netqos compile {f} -o - --emit tree     prints one artefact (tc, rollback, plan, tree, \
         svg, cloud-init, systemd, conflist, annotations)\n\
         (`netqos check {f}` only checks.)"
    );
    Exit::Usage
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    let explicit = !a.emit.is_empty();
    let allowed = match a.node.allowed() {
        Ok(x) => x,
        Err(e) => return e,
    };
    let node_conflist = match super::cni::read(a.node.conflist.as_deref()) {
        Ok(c) => c,
        Err(e) => return e,
    };
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
        Err(e) => return e.report(ui),
    };
    let checked = netqos::check_source(&src.text, &vars);
    let mut diags = checked.diagnostics.into_sorted();
    diags.retain(|d| !allowed.contains(&d.code));
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
    let pods = model.pods.as_ref();
    if !to_stdout
        && let Some(d) = super::cni::check_out_dir(a.out, pods, a.node.conflist.as_deref())
    {
        let cmd = netqos::report::Source {
            name: "<command line>".into(),
            text: String::new(),
        };
        print(&[d], &cmd, Format::Human, ui, &mut json);
        return Exit::Invalid;
    }
    // The conflist change, which the scripts install and restore too.
    let wants = |k: &str| kinds.iter().any(|x| x == k);
    let cni = match pods {
        Some(p) if wants("conflist") || wants("tc") || wants("rollback") || wants("cloud-init") => {
            match conflist_files(p, node_conflist.as_ref(), &allowed, ui, &mut json) {
                Ok(c) => Some(c),
                Err(e) => return e,
            }
        }
        _ => None,
    };
    let install = cni
        .as_ref()
        .and_then(|c| c.install.as_ref())
        .map(|i| backend::CniInstall {
            path: i.path.clone(),
            original: i.original.clone(),
            patched: i.patched.clone(),
            strict: i.from_node,
        });
    // (relative path, contents) of every file to write, in a fixed order.
    let mut outputs: Vec<(String, String)> = Vec::new();
    for kind in &kinds {
        let text = match kind.as_str() {
            "tc" => backend::tc_script_for_node(&plan, &source_name, &templates, install.as_ref()),
            "rollback" => {
                backend::rollback_script_for_node(&plan, &source_name, &templates, install.as_ref())
            }
            "plan" => Ok(backend::plan_json(&plan)),
            "conflist" | "annotations" => {
                let Some(pods) = pods else {
                    if explicit {
                        eprintln!("netqos: `--emit {kind}` needs a `pods` block in the policy");
                        return Exit::Usage;
                    }
                    continue;
                };
                if kind == "annotations" {
                    Ok(netqos::cni::annotations::component(pods, &source_name))
                } else {
                    let files = cni.as_ref().map_or(&[][..], |c| &c.files[..]);
                    if to_stdout {
                        // `-o -` prints the RFC 6902 patch itself.
                        let patch = files.iter().find(|f| f.0 == "conflist/patch.json");
                        Ok(patch.map_or_else(|| "[]\n".to_string(), |f| f.1.clone()))
                    } else {
                        outputs.extend(files.iter().cloned());
                        continue;
                    }
                }
            }
            "cloud-init" => {
                backend::node_files_for_node(&plan, &source_name, &templates, install.as_ref())
                    .and_then(|files| backend::cloud_config(&files, &source_name))
            }
            "systemd" => backend::unit(&plan, &source_name),
            "svg" => Ok(backend::svg(&plan)),
            _ => Ok(backend::tree(&plan, ui.verbose)),
        };
        match text {
            Ok(t) => outputs.push((file_name(kind).to_string(), t)),
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
    for (rel, text) in outputs {
        let path: PathBuf = a.out.join(&rel);
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("netqos: cannot create {}: {e}", dir.display());
            return Exit::Io;
        }
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
        if rel.ends_with(".sh") {
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

/// The `conflist` artefact's files; prints its summary (and any diagnostics about the
/// node's conflist) to stderr.
fn conflist_files(
    pods: &netqos::model::Pods,
    node: Option<&netqos::report::Source>,
    allowed: &[netqos::codes::Code],
    ui: Ui,
    json: &mut Vec<netqos::report::JsonDiagnostic>,
) -> Result<netqos::cni::ConflistArtefacts, Exit> {
    let input = node.map(|n| netqos::cni::NodeConflist {
        path: &n.name,
        text: &n.text,
    });
    let default_src = netqos::report::Source {
        name: "<flavour default conflist>".into(),
        text: String::new(),
    };
    let src = node.unwrap_or(&default_src);
    let warnings = node
        .map(|n| super::cni::diagnose(Some(pods), n))
        .unwrap_or_default();
    match netqos::cni::conflist_artefacts(pods, input.as_ref()) {
        Ok(a) => {
            let shown: Vec<_> = warnings
                .into_iter()
                .filter(|d| !allowed.contains(&d.code))
                .collect();
            print(&shown, src, Format::Human, ui, json);
            if !ui.quiet {
                for line in &a.summary {
                    eprintln!("conflist: {line}");
                }
            }
            Ok(a)
        }
        Err(diags) => {
            print(&diags, src, Format::Human, ui, json);
            eprintln!("netqos: conflist not patched: fix the problems above (nothing was written)");
            Err(Exit::Invalid)
        }
    }
}
