//! The CNI conflist as a resource of `apply`: the patched file written in place (atomic
//! rename in the same directory, owner and mode kept), the original kept outside the CNI
//! directory, and put back by `rollback` only over the very file `apply` wrote.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apply::resource::{Recorded, Resource, ResourceError};
use crate::cni::{self, NodeConflist};
use crate::diagnostic::Diagnostic;
use crate::exit::Exit;
use crate::model::Pods;

/// What `apply` did to the conflist, kept in the transaction record for `rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflistRecord {
    pub path: PathBuf,
    /// The original content, outside the CNI directory.
    pub backup: PathBuf,
    /// What `apply` wrote: `rollback` restores only over exactly this.
    pub patched: String,
}

/// The conflist change an apply would make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Nothing to write, and why (already patched, no such file, flavour needs nothing).
    Nothing(String),
    Install {
        path: PathBuf,
        original: String,
        patched: String,
    },
}

/// Why the conflist cannot be prepared: diagnostics about its text (exit 1), or I/O (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{} cannot be patched", path.display())]
    Invalid {
        path: PathBuf,
        text: String,
        diagnostics: Vec<Diagnostic>,
    },
    #[error(transparent)]
    Io(#[from] ConflistError),
}

impl PrepareError {
    pub fn exit(&self) -> Exit {
        match self {
            PrepareError::Invalid { .. } => Exit::Invalid,
            PrepareError::Io(_) => Exit::Io,
        }
    }
}

/// A failure to write or restore the conflist or its backup.
#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} names no file", path.display())]
    NoFile { path: PathBuf },
    #[error("the backup of {} would be in the CNI directory itself", path.display())]
    BackupInCniDir { path: PathBuf },
    #[error("{} changed while applying; not patched", path.display())]
    Changed { path: PathBuf },
    #[error(
        "{} is not the file apply wrote (it changed since); left alone, the original is in {}",
        path.display(),
        backup.display()
    )]
    NotOurs { path: PathBuf, backup: PathBuf },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConflistError {
    let path = path.to_path_buf();
    move |source| ConflistError::Io { what, path, source }
}

/// The node's conflist path: `over` when given, else the flavour's.
pub fn path_for(pods: &Pods, over: Option<&Path>) -> Option<PathBuf> {
    over.map(Path::to_path_buf).or_else(|| {
        pods.cni
            .as_ref()
            .map(|c| PathBuf::from(cni::flavour::of(c).conflist_path))
    })
}

/// Reads the node's conflist at `path` and works out the change, against that very file.
pub fn prepare(pods: &Pods, path: &Path) -> Result<Prepared, PrepareError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Prepared::Nothing(format!(
                "{} does not exist (is the CNI installed?): conflist not patched",
                path.display()
            )));
        }
        Err(e) => return Err(io("read", path)(e).into()),
    };
    let name = path.display().to_string();
    let node = NodeConflist {
        path: &name,
        text: &text,
    };
    match cni::conflist_artefacts(pods, Some(&node)) {
        Ok(a) => Ok(match a.install {
            Some(i) => Prepared::Install {
                path: path.to_path_buf(),
                original: i.original,
                patched: i.patched,
            },
            None => Prepared::Nothing(a.summary.join("; ")),
        }),
        Err(diagnostics) => Err(PrepareError::Invalid {
            path: path.to_path_buf(),
            text,
            diagnostics,
        }),
    }
}

/// Where the original of `path` is kept: `<state>/cni/<name>.orig`. Refused inside the
/// conflist's own directory, where the runtime would load it as a network (NQ037).
pub fn backup_path(state: &Path, path: &Path) -> Result<PathBuf, ConflistError> {
    let name = path.file_name().ok_or_else(|| ConflistError::NoFile {
        path: path.to_path_buf(),
    })?;
    let backup = state
        .join("cni")
        .join(format!("{}.orig", name.to_string_lossy()));
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(dir) = path.parent()
        && canon(state).join("cni") == canon(dir)
    {
        return Err(ConflistError::BackupInCniDir {
            path: path.to_path_buf(),
        });
    }
    Ok(backup)
}

/// Installs the patched conflist: the backup first (synced), then the new content by rename.
/// Fails without touching the conflist when the file is no longer `original`.
pub fn install(
    state: &Path,
    path: &Path,
    original: &str,
    patched: &str,
) -> Result<ConflistRecord, ConflistError> {
    let current = std::fs::read(path).map_err(io("read", path))?;
    if current != original.as_bytes() {
        return Err(ConflistError::Changed {
            path: path.to_path_buf(),
        });
    }
    let backup = backup_path(state, path)?;
    if let Some(dir) = backup.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
    }
    let meta = std::fs::metadata(path).map_err(io("read", path))?;
    let tmp = write_beside(&backup, original.as_bytes(), &meta).map_err(io("write", &backup))?;
    std::fs::rename(&tmp, &backup).map_err(io("write", &backup))?;
    replace(path, patched.as_bytes()).map_err(io("write", path))?;
    Ok(ConflistRecord {
        path: path.to_path_buf(),
        backup,
        patched: patched.to_string(),
    })
}

/// What `restore` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// The original is back and the backup removed.
    Restored,
    /// Nothing to do: the backup is gone (restored before).
    AlreadyDone,
}

/// Puts the original back, only over exactly what `apply` wrote.
pub fn restore(r: &ConflistRecord) -> Result<Restored, ConflistError> {
    let original = match crate::apply::safe_fs::read(&r.backup) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Restored::AlreadyDone),
        Err(e) => return Err(io("read", &r.backup)(e)),
    };
    match std::fs::read(&r.path).map_err(io("read", &r.path))? {
        cur if cur == original => {}
        cur if cur == r.patched.as_bytes() => {
            replace(&r.path, &original).map_err(io("write", &r.path))?
        }
        _ => {
            return Err(ConflistError::NotOurs {
                path: r.path.clone(),
                backup: r.backup.clone(),
            });
        }
    }
    std::fs::remove_file(&r.backup).map_err(io("remove", &r.backup))?;
    Ok(Restored::Restored)
}

/// The conflist as an apply resource: installed once the kernel holds the tree.
#[derive(Debug, Clone)]
pub struct ConflistFile {
    pub path: PathBuf,
    /// The file as `prepare` read it: the install refuses any other content.
    pub original: String,
    pub patched: String,
}

impl Resource for ConflistFile {
    fn describe(&self) -> String {
        format!("conflist {}", self.path.display())
    }

    fn record(&self, state: &Path) -> Result<Option<Recorded>, ResourceError> {
        Ok(Some(Recorded::Conflist(ConflistRecord {
            path: self.path.clone(),
            backup: backup_path(state, &self.path)?,
            patched: self.patched.clone(),
        })))
    }

    fn apply(&mut self, state: &Path) -> Result<String, ResourceError> {
        install(state, &self.path, &self.original, &self.patched)?;
        Ok(format!(
            "conflist: patched {}; pods created from now on are shaped",
            self.path.display()
        ))
    }
}

/// Replaces `path` by `bytes` through a temporary file in the same directory (a dot-name
/// the CNI runtime does not load), keeping owner and mode.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let tmp = write_beside(path, bytes, &meta)?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to a dot-temp file next to `path` with `meta`'s owner and mode; returns
/// the temporary file, for the caller to rename into place.
fn write_beside(path: &Path, bytes: &[u8], meta: &std::fs::Metadata) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("conflist".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.netqos-tmp-{}", std::process::id()));
    let r = (|| {
        crate::apply::safe_fs::create_exclusive(&tmp, bytes, 0o600)?;
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cni;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netqos-cf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("net.d")).unwrap();
        d
    }

    #[test]
    fn install_then_restore_round_trips_and_keeps_the_mode() {
        let d = tmp("rt");
        let conf = d.join("net.d/10-flannel.conflist");
        let original = include_str!("../cni/defaults/flannel.conflist");
        std::fs::write(&conf, original).unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
        let pods = Pods {
            cni: Some(Cni::Flannel),
            limits: Vec::new(),
            burst: None,
        };
        let Prepared::Install {
            path,
            original: o,
            patched,
        } = prepare(&pods, &conf).unwrap()
        else {
            panic!("expected an install")
        };
        let rec = install(&d.join("state"), &path, &o, &patched).unwrap();
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), patched);
        assert_eq!(std::fs::metadata(&conf).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(d.join("net.d")).unwrap().count(), 1);
        // Applying again finds nothing to do.
        assert!(matches!(
            prepare(&pods, &conf).unwrap(),
            Prepared::Nothing(_)
        ));
        assert_eq!(restore(&rec).unwrap(), Restored::Restored);
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), original);
        assert_eq!(restore(&rec).unwrap(), Restored::AlreadyDone);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_changed_since_apply_is_left_alone() {
        let d = tmp("changed");
        let conf = d.join("net.d/10-flannel.conflist");
        let original = include_str!("../cni/defaults/flannel.conflist");
        std::fs::write(&conf, original).unwrap();
        let pods = Pods {
            cni: Some(Cni::Flannel),
            limits: Vec::new(),
            burst: None,
        };
        let Prepared::Install { path, patched, .. } = prepare(&pods, &conf).unwrap() else {
            panic!()
        };
        let rec = install(&d.join("state"), &path, original, &patched).unwrap();
        std::fs::write(&conf, "{}").unwrap();
        assert!(restore(&rec).is_err());
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "{}");
        assert!(rec.backup.exists(), "the backup is kept");
        // A backup inside the CNI directory is refused.
        assert!(backup_path(&d.join("net.d/.."), &d.join("cni/x.conflist")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
