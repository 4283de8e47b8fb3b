//! The node's CNI conflist on the command line: reading `--conflist FILE`, and refusing output
//! directories the runtime reads network configs from (NQ037).

use std::path::{Component, Path, PathBuf};

use super::Exit;
use netqos::codes::Code;
use netqos::diagnostic::Diagnostic;
use netqos::model::Pods;
use netqos::report::Source;

/// Reads the `--conflist` file, if one was given, bounded like a policy (`input`).
pub fn read(path: Option<&Path>, ui: super::Ui) -> Result<Option<Source>, Exit> {
    let Some(path) = path else { return Ok(None) };
    match super::input::read_text(path, "conflist") {
        Ok(text) => Ok(Some(Source {
            name: path.display().to_string(),
            text,
        })),
        Err(super::input::Unreadable::Io(message)) => {
            eprintln!("netqos: {message}");
            Err(Exit::Io)
        }
        Err(e) => Err(e.report(ui)),
    }
}

/// The conflist diagnostics (about the conflist's own text) for a checked policy.
pub fn diagnose(pods: Option<&Pods>, conflist: &Source) -> Vec<Diagnostic> {
    let has_limits = pods.is_some_and(|p| !p.limits.is_empty());
    netqos::cni::conflist::analyse(&conflist.text, has_limits).1
}

/// Absolute, with `.` and `..` resolved lexically, then symlinks resolved as far as the path
/// exists.
fn normalise(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    std::fs::canonicalize(&out).unwrap_or(out)
}

/// NQ037 when `out` is a directory the container runtime loads network configs from.
pub fn check_out_dir(
    out: &Path,
    pods: Option<&Pods>,
    conflist: Option<&Path>,
) -> Option<Diagnostic> {
    let mut forbidden = vec![PathBuf::from("/etc/cni/net.d")];
    if let Some(c) = conflist.and_then(|c| normalise(c).parent().map(Path::to_path_buf)) {
        forbidden.push(c);
    }
    if let Some(cni) = pods.and_then(|p| p.cni.as_ref()) {
        let path = netqos::cni::flavour::of(cni).conflist_path;
        if let Some(dir) = Path::new(&path).parent() {
            forbidden.push(dir.to_path_buf());
        }
    }
    let out_n = normalise(out);
    let hit = forbidden.iter().find(|f| normalise(f) == out_n)?;
    Some(
        Diagnostic::new(
            Code::NQ037,
            format!(
                "output directory {} is where the container runtime reads network configs ({})",
                out.display(),
                hit.display()
            ),
        )
        .help("compile into a directory of your own (e.g. /var/lib/netqos/out); the apply script installs the conflist in place and keeps its backup outside the CNI directory"),
    )
}
