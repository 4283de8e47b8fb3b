//! `netqos compile FILE -o DIR`: checks, lowers and writes the artefacts (only those that
//! changed, each by atomic rename), or prints one with `-o -`.

use std::path::Path;

use super::check::{external_vars, print, read_source};
use super::{Exit, Format, NodeArgs, Ui, VarArgs, write_atomic};
use netqos::backend::{Artefact, OutFile, RenderError, Templates};
use netqos::cni::NodeConflist;
use netqos::diagnostic::Diagnostic;
use netqos::pipeline::{self, Checked, Conflist, Options, Selection};
use netqos::report::Source;

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
    pub emit: &'a [Artefact],
    pub templates: Option<&'a Path>,
    pub vars: &'a VarArgs,
    pub node: &'a NodeArgs,
    pub deny_warnings: bool,
}

/// `compile` without `-o`: what to write instead of clap's generic "required argument".
pub fn no_output(file: &Path) -> Exit {
    let f = file.display();
    let kinds: Vec<&str> = Artefact::ALL.iter().map(|k| k.name()).collect();
    eprintln!(
        "netqos: compile needs to know where the artefacts go:\n  \
         netqos compile {f} -o out/              writes every artefact into out/\n  \
         netqos compile {f} -o - --emit tree     prints one artefact ({})\n\
         (`netqos check {f}` only checks.)",
        kinds.join(", ")
    );
    Exit::Usage
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    compile(a, ui).map_or_else(|e| e, |()| Exit::Ok)
}

/// Diagnostics about something other than a file (`--var`, the output directory).
fn command_line() -> Source {
    Source {
        name: "<command line>".into(),
        text: String::new(),
    }
}

fn compile(a: &Args<'_>, ui: Ui) -> Result<(), Exit> {
    let allowed = a.node.allowed()?;
    let node_conflist = super::cni::read(a.node.conflist.as_deref(), ui)?;
    let to_stdout = a.out == Path::new("-");
    if to_stdout && a.emit.len() != 1 {
        eprintln!("netqos: `-o -` prints one artefact: choose it with `--emit KIND`");
        return Err(Exit::Usage);
    }
    let vars = external_vars(a.vars).map_err(|(diags, exit)| {
        print(&diags, &command_line(), Format::Human, ui, &mut Vec::new());
        exit
    })?;
    let src = read_source(a.file).map_err(|e| e.report(ui))?;
    let name = a
        .file
        .file_name()
        .map_or("policy".into(), |n| n.to_string_lossy().into_owned());
    let mut opts = Options {
        name: &name,
        artefacts: if a.emit.is_empty() {
            Selection::All
        } else {
            Selection::Only(a.emit.to_vec())
        },
        templates: Templates::default(),
        conflist: node_conflist.as_ref().map(|n| NodeConflist {
            path: &n.name,
            text: &n.text,
        }),
        allow: &allowed,
        deny_warnings: a.deny_warnings,
        verbose: ui.verbose,
    };
    let checked = check(&src, &vars, &opts, ui)?;
    opts.templates = load_templates(a.templates)?;
    let pods = checked.model.pods.as_ref();
    if !to_stdout
        && let Some(d) = super::cni::check_out_dir(a.out, pods, a.node.conflist.as_deref())
    {
        print(&[d], &command_line(), Format::Human, ui, &mut Vec::new());
        return Err(Exit::Invalid);
    }
    let conflist = conflist(&checked, &opts, node_conflist.as_ref(), ui)?;
    let files = checked
        .files(&opts, conflist.as_ref())
        .map_err(|e| render_failed(&e))?;
    if to_stdout {
        print_one(a.emit[0], &files);
        return Ok(());
    }
    write_all(a.out, &files, ui)
}

/// The front half: prints the policy's diagnostics; a policy with errors stops here.
fn check(
    src: &Source,
    vars: &netqos::vars::ExternalVars,
    opts: &Options<'_>,
    ui: Ui,
) -> Result<Checked, Exit> {
    let show = |diags: &[Diagnostic]| print(diags, src, Format::Human, ui, &mut Vec::new());
    match pipeline::check(&src.text, vars, opts.allow, opts.deny_warnings) {
        Ok(checked) => {
            show(&checked.warnings);
            Ok(checked)
        }
        Err(diags) => {
            show(&diags);
            eprintln!("netqos: {} not compiled: fix the errors above", src.name);
            Err(Exit::Invalid)
        }
    }
}

/// The conflist change; prints its summary (and any diagnostics about the node's conflist)
/// to stderr.
fn conflist(
    checked: &Checked,
    opts: &Options<'_>,
    node: Option<&Source>,
    ui: Ui,
) -> Result<Option<Conflist>, Exit> {
    let default_src = Source {
        name: "<flavour default conflist>".into(),
        text: String::new(),
    };
    let src = node.unwrap_or(&default_src);
    let show = |diags: &[Diagnostic]| print(diags, src, Format::Human, ui, &mut Vec::new());
    match checked.conflist(opts) {
        Ok(c) => {
            if let Some(c) = &c {
                show(&c.warnings);
                if !ui.quiet {
                    for line in &c.artefacts.summary {
                        eprintln!("conflist: {line}");
                    }
                }
            }
            Ok(c)
        }
        Err(pipeline::Error::Conflist(diags)) => {
            show(&diags);
            eprintln!("netqos: conflist not patched: fix the problems above (nothing was written)");
            Err(Exit::Invalid)
        }
        Err(e) => Err(render_failed(&e)),
    }
}

/// Says why rendering failed (usage errors: a missing `pods` block, a broken template).
fn render_failed(e: &pipeline::Error) -> Exit {
    match e {
        pipeline::Error::Render {
            source: e @ RenderError::NeedsPods(_),
            ..
        } => eprintln!("netqos: {e}"),
        pipeline::Error::Render { artefact, source } => {
            eprintln!("netqos: template for `{artefact}` failed: {source}");
        }
        other => eprintln!("netqos: {other}"),
    }
    Exit::Usage
}

/// `-o -`: the one artefact on stdout; for `conflist`, the RFC 6902 patch itself.
fn print_one(kind: Artefact, files: &[OutFile]) {
    if kind == Artefact::Conflist {
        let patch = files.iter().find(|f| f.path == "conflist/patch.json");
        out!("{}", patch.map_or("[]\n", |f| f.text.as_str()));
        return;
    }
    for f in files {
        out!("{}", f.text);
    }
}

/// Writes each file that changed, by atomic rename; scripts are made executable.
fn write_all(out: &Path, files: &[OutFile], ui: Ui) -> Result<(), Exit> {
    create_dir(out)?;
    for f in files {
        let path = out.join(&f.path);
        if let Some(dir) = path.parent() {
            create_dir(dir)?;
        }
        if std::fs::read(&path).is_ok_and(|old| old == f.text.as_bytes()) {
            if ui.verbose {
                eprintln!("unchanged {}", path.display());
            }
            continue;
        }
        if let Err(e) = write_atomic(&path, f.text.as_bytes()) {
            eprintln!("netqos: cannot write {}: {e}", path.display());
            return Err(Exit::Io);
        }
        if f.path.ends_with(".sh") {
            set_executable(&path);
        }
        if !ui.quiet {
            outln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), Exit> {
    std::fs::create_dir_all(dir).map_err(|e| {
        eprintln!("netqos: cannot create {}: {e}", dir.display());
        Exit::Io
    })
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mut p = meta.permissions();
        p.set_mode(p.mode() | 0o755);
        let _ = std::fs::set_permissions(path, p);
    }
}
