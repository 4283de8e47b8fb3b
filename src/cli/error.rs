//! The runtime errors of the commands check, compile, fmt, diff, explain and completions,
//! each with the exit status it maps to. [`report`] is the one place they are printed.

use std::io;
use std::path::PathBuf;

use super::Exit;
use netqos::backend::{Artefact, RenderError};
use netqos::codes::Code;

/// Why a command stopped (or, for `check` and `fmt`, gave up on one file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy file (`-` is stdin).
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Another input: `what` is "vars file", "template" or "conflist".
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
            Error::Read { .. }
            | Error::ReadInput { .. }
            | Error::Write { .. }
            | Error::CreateDir { .. } => Exit::Io,
            Error::UnknownCode(_)
            | Error::NotAllowable(_)
            | Error::OneArtefact
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
        }
    }
}

/// Prints `e` on stderr (unless diagnostics already did) and gives its exit status.
pub fn report(e: &Error) -> Exit {
    if !matches!(e, Error::Diagnosed(_)) {
        eprintln!("netqos: {e}");
    }
    e.exit()
}

/// The exit status of a command's result, printing its error.
pub fn finish(result: Result<Exit, Error>) -> Exit {
    result.unwrap_or_else(|e| report(&e))
}
