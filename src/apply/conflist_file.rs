//! The CNI conflist as a resource of `apply`: the patched file written in place (atomic
//! rename in the same directory, owner and mode kept), the original kept outside the CNI
//! directory, and put back by `rollback` only over the very file `apply` wrote.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cni::{self, NodeConflist};
use crate::diagnostic::Diagnostic;
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

/// Why the conflist cannot be prepared: diagnostics about its text (exit 1), or I/O.
#[derive(Debug)]
pub enum PrepareError {
    Invalid {
        path: PathBuf,
        text: String,
        diagnostics: Vec<Diagnostic>,
    },
    Io(PathBuf, std::io::Error),
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
        Err(e) => return Err(PrepareError::Io(path.to_path_buf(), e)),
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
pub fn backup_path(state: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let backup = state
        .join("cni")
        .join(format!("{}.orig", name.to_string_lossy()));
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(dir) = path.parent()
        && canon(state).join("cni") == canon(dir)
    {
        return Err(std::io::Error::other(format!(
            "the backup of {} would be in the CNI directory itself",
            path.display()
        )));
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
) -> std::io::Result<ConflistRecord> {
    let current = std::fs::read(path)?;
    if current != original.as_bytes() {
        return Err(std::io::Error::other(format!(
            "{} changed while applying; not patched",
            path.display()
        )));
    }
    let backup = backup_path(state, path)?;
    if let Some(dir) = backup.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = write_beside(&backup, original.as_bytes(), &std::fs::metadata(path)?)?;
    std::fs::rename(&tmp, &backup)?;
    replace(path, patched.as_bytes())?;
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
pub fn restore(r: &ConflistRecord) -> std::io::Result<Restored> {
    let original = match std::fs::read(&r.backup) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Restored::AlreadyDone),
        Err(e) => return Err(e),
    };
    match std::fs::read(&r.path) {
        Ok(cur) if cur == original => {}
        Ok(cur) if cur == r.patched.as_bytes() => replace(&r.path, &original)?,
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not the file apply wrote (it changed since); left alone, the original is in {}",
                r.path.display(),
                r.backup.display()
            )));
        }
        Err(e) => return Err(e),
    }
    std::fs::remove_file(&r.backup)?;
    Ok(Restored::Restored)
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
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
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
            cidr: Vec::new(),
            overlay: crate::model::Overlay::None,
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
            cidr: Vec::new(),
            overlay: crate::model::Overlay::None,
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
