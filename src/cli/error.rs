//! The runtime errors of the commands check, compile, fmt, diff, explain and completions,
//! each with the exit status it maps to. [`report`] is the one place they are printed.

use std::io;
use std::path::PathBuf;

use super::input::Unreadable;
use super::{Exit, Ui};
use netqos::backend::{Artefact, RenderError};
use netqos::codes::Code;

/// Why a command stopped (or, for `check` and `fmt`, gave up on one file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy or vars file that cannot be read (exit 3) or is not usable text (NQ080–NQ082,
    /// exit 1).
    #[error("{}", unreadable_text(.0))]
    Input(Unreadable),
    /// The same for one side of `netqos diff`, where exit 1 means "different": an unusable
    /// input is exit 2.
    #[error("{}", unreadable_text(.0))]
    DiffInput(Unreadable),
    /// Another input: `what` is "template" or "conflist".
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadInput {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("`{0}` is not a netqos diagnostic code; `netqos explain` lists them")]
    UnknownCode(String),
    #[error("{0} is an error and cannot be allowed; fix the policy instead")]
    NotAllowable(Code),
    #[error("`-o -` prints one artefact: choose it with `--emit KIND`")]
    OneArtefact,
    /// `compile` without `-o`: what to write instead of clap's generic "required argument".
    #[error("{}", no_output(.0))]
    NoOutput(PathBuf),
    #[error("only one side can be read from stdin")]
    TwoStdins,
    #[error("{0}")]
    NeedsPods(RenderError),
    #[error("template for `{artefact}` failed: {source}")]
    Template {
        artefact: Artefact,
        source: RenderError,
    },
    #[error("{name} not compiled: fix the errors above")]
    NotCompiled { name: String },
    #[error("conflist not patched: fix the problems above (nothing was written)")]
    ConflistNotPatched,
    #[error("{name} was not formatted: fix the errors above first")]
    NotFormatted { name: String },
    #[error("{name} has errors: fix them before comparing")]
    DiffSideInvalid { name: String },
    /// The diagnostics printed before say it all (a bad `--var`, NQ037).
    #[error("see the diagnostics above")]
    Diagnosed(Exit),
}

impl Error {
    /// The exit status (see `man 1 netqos`).
    pub fn exit(&self) -> Exit {
        match self {
            Error::Input(Unreadable::Io(_)) | Error::DiffInput(Unreadable::Io(_)) => Exit::Io,
            Error::Input(Unreadable::Invalid(_)) => Exit::Invalid,
            Error::DiffInput(Unreadable::Invalid(_)) => Exit::Usage,
            Error::ReadInput { .. } | Error::Write { .. } | Error::CreateDir { .. } => Exit::Io,
            Error::UnknownCode(_)
            | Error::NotAllowable(_)
            | Error::OneArtefact
            | Error::NoOutput(_)
            | Error::TwoStdins
            | Error::NeedsPods(_)
            | Error::Template { .. }
            | Error::DiffSideInvalid { .. } => Exit::Usage,
            Error::NotCompiled { .. } | Error::ConflistNotPatched | Error::NotFormatted { .. } => {
                Exit::Invalid
            }
            Error::Diagnosed(exit) => *exit,
        }
    }

    /// A render failure of the pipeline.
    pub fn render(artefact: Artefact, source: RenderError) -> Self {
        match source {
            e @ RenderError::NeedsPods(_) => Error::NeedsPods(e),
            source @ RenderError::Template(_) => Error::Template { artefact, source },
            RenderError::Write(source) => Error::Write {
                path: PathBuf::from(artefact.info().file_name),
                source,
            },
        }
    }
}

/// How to call `compile` for `file`.
fn no_output(file: &std::path::Path) -> String {
    let f = file.display();
    let kinds: Vec<&str> = Artefact::ALL.iter().map(|k| k.name()).collect();
    format!(
        "compile needs to know where the artefacts go:\n  \
         netqos compile {f} -o out/              writes every artefact into out/\n  \
         netqos compile {f} -o - --emit tree     prints one artefact ({})\n\
         (`netqos check {f}` only checks.)",
        kinds.join(", ")
    )
}

impl From<Unreadable> for Error {
    fn from(u: Unreadable) -> Self {
        Error::Input(u)
    }
}

/// The one-line text of an unreadable input (an unusable one is a diagnostic, shown by
/// [`report`]).
fn unreadable_text(u: &Unreadable) -> String {
    match u {
        Unreadable::Io(message) => message.clone(),
        Unreadable::Invalid(b) => b.1.message.clone(),
    }
}

/// Prints `e` on stderr (unless diagnostics already did; an unusable input as its
/// diagnostic) and gives its exit status.
pub fn report(e: Error, ui: Ui) -> Exit {
    let exit = e.exit();
    match e {
        Error::Diagnosed(_) => {}
        Error::Input(u) | Error::DiffInput(u) => {
            u.report(ui);
        }
        e => eprintln!("netqos: {e}"),
    }
    exit
}

/// The exit status of a command's result, printing its error.
pub fn finish(result: Result<Exit, Error>, ui: Ui) -> Exit {
    result.unwrap_or_else(|e| report(e, ui))
}
