//! `netqos compile FILE -o DIR`: checks, lowers and writes the artefacts (only those that
//! changed, each by atomic rename), or prints one with `-o -`.

use std::path::Path;

use super::check::{external_vars, print, read_source};
use super::error::Error;
use super::out_file::{OutFile, Written};
use super::{Exit, Format, NodeArgs, Ui, VarArgs};
use netqos::backend::{self, Artefact, Body, RenderError, Templates};
use netqos::cni::NodeConflist;
use netqos::diagnostic::Diagnostic;
use netqos::pipeline::{self, Checked, Conflist, Options, Selection};
use netqos::report::Source;

fn load_templates(dir: Option<&Path>) -> Result<Templates, Error> {
    let Some(dir) = dir else {
        return Ok(Templates::default());
    };
    let read = |name: &str| -> Result<Option<String>, Error> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadInput {
                what: "template",
                path,
                source,
            }),
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

pub fn run(a: &Args<'_>, ui: Ui) -> Result<Exit, Error> {
    compile(a, ui).map(|()| Exit::Ok)
}

/// Diagnostics about something other than a file (`--var`, the output directory).
fn command_line() -> Source {
    Source {
        name: "<command line>".into(),
        text: String::new(),
    }
}

fn compile(a: &Args<'_>, ui: Ui) -> Result<(), Error> {
    let mut timings = super::timings::Timings::from_env();
    let allowed = a.node.allowed()?;
    let node_conflist = super::cni::read(a.node.conflist.as_deref())?;
    let to_stdout = a.out == Path::new("-");
    let one = match (to_stdout, a.emit) {
        (true, [kind]) => Some(*kind),
        (true, _) => return Err(Error::OneArtefact),
        (false, _) => None,
    };
    let vars = external_vars(a.vars).map_err(|(diags, exit)| {
        print(&diags, &command_line(), Format::Human, ui, &mut Vec::new());
        Error::Diagnosed(exit)
    })?;
    let src = read_source(a.file)?;
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
    timings.mark("read");
    let (model, warnings) = check(&src, &vars, &opts, ui, &mut timings)?;
    // From here on only the model, then only the plan and the pods block are read: the
    // policy text goes before lowering, the model's classes before rendering (tens of
    // megabytes each for 100,000 classes).
    drop(src);
    let mut checked = Checked::lower(model, warnings, &mut |stage| timings.mark(stage));
    checked.model.interfaces = Vec::new();
    opts.templates = load_templates(a.templates)?;
    let pods = checked.model.pods.as_ref();
    if !to_stdout
        && let Some(d) = super::cni::check_out_dir(a.out, pods, a.node.conflist.as_deref())
    {
        print(&[d], &command_line(), Format::Human, ui, &mut Vec::new());
        return Err(Error::Diagnosed(Exit::Invalid));
    }
    let conflist = conflist(&checked, &opts, node_conflist.as_ref(), ui)?;
    match one {
        Some(kind) => {
            let files = checked
                .files(&opts, conflist.as_ref())
                .map_err(render_failed)?;
            print_one(kind, &files);
            Ok(())
        }
        None => {
            // Each file is written as soon as it is rendered and then dropped: a 100,000-class
            // policy's artefacts are hundreds of megabytes together.
            create_dir(a.out)?;
            let mut dir = OutDir {
                out: a.out,
                ui,
                timings: &mut timings,
            };
            checked.write_each(&opts, conflist.as_ref(), &mut dir)?;
            timings.mark("render and write");
            super::discard(checked);
            Ok(())
        }
    }
}

/// The output directory: each file is streamed into it as it is rendered (a 100,000-class
/// policy's artefacts are hundreds of megabytes together) and replaces the old one only
/// when it changed, by atomic rename once every file rendered; scripts are made
/// executable.
struct OutDir<'a> {
    out: &'a Path,
    ui: Ui,
    timings: &'a mut super::timings::Timings,
}

impl pipeline::FileSink for OutDir<'_> {
    type Pending = (Written, std::time::Duration);
    type Error = Error;

    fn render(
        &self,
        artefact: Artefact,
        name: &str,
        body: Body<'_>,
    ) -> Result<Self::Pending, Error> {
        let started = std::time::Instant::now();
        let path = self.out.join(name);
        if let Some(dir) = path.parent() {
            create_dir(dir)?;
        }
        let failed = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let mut file = OutFile::create(&path).map_err(failed)?;
        body(&mut file).map_err(|e| match e {
            RenderError::Write(source) => failed(source),
            e => Error::render(artefact, e),
        })?;
        let written = file.finish().map_err(failed)?;
        Ok((written, started.elapsed()))
    }

    fn commit(
        &mut self,
        _: Artefact,
        name: &str,
        (written, took): Self::Pending,
    ) -> Result<(), Error> {
        let path = self.out.join(name);
        let changed = written.commit().map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        if changed {
            if name.ends_with(".sh") {
                set_executable(&path);
            }
            if !self.ui.quiet {
                outln!("wrote {}", path.display());
            }
        } else if self.ui.verbose {
            eprintln!("unchanged {}", path.display());
        }
        self.timings.rendered(name, took);
        Ok(())
    }
}

impl From<pipeline::Error> for Error {
    fn from(e: pipeline::Error) -> Self {
        render_failed(e)
    }
}

/// The front half up to the model: prints the policy's diagnostics; a policy with errors
/// stops here.
fn check(
    src: &Source,
    vars: &netqos::vars::ExternalVars,
    opts: &Options<'_>,
    ui: Ui,
    timings: &mut super::timings::Timings,
) -> Result<(netqos::model::Model, Vec<Diagnostic>), Error> {
    let show = |diags: &[Diagnostic]| print(diags, src, Format::Human, ui, &mut Vec::new());
    let mark = &mut |stage: &str| timings.mark(stage);
    match pipeline::check_unlowered(&src.text, vars, opts.allow, opts.deny_warnings, mark) {
        Ok((model, warnings)) => {
            show(&warnings);
            Ok((model, warnings))
        }
        Err(diags) => {
            show(&diags);
            Err(Error::NotCompiled {
                name: src.name.clone(),
            })
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
) -> Result<Option<Conflist>, Error> {
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
            Err(Error::ConflistNotPatched)
        }
        Err(e) => Err(render_failed(e)),
    }
}

/// Why rendering failed: a missing `pods` block or a broken template.
fn render_failed(e: pipeline::Error) -> Error {
    match e {
        pipeline::Error::Render { artefact, source } => Error::render(artefact, source),
        pipeline::Error::Policy(_) => Error::Diagnosed(Exit::Invalid),
        pipeline::Error::Conflist(_) => Error::ConflistNotPatched,
    }
}

/// `-o -`: the one artefact on stdout; for `conflist`, the RFC 6902 patch itself.
fn print_one(kind: Artefact, files: &[backend::OutFile]) {
    if kind == Artefact::Conflist {
        let patch = files.iter().find(|f| f.path == "conflist/patch.json");
        out!("{}", patch.map_or("[]\n", |f| f.text.as_str()));
        return;
    }
    for f in files {
        out!("{}", f.text);
    }
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
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
