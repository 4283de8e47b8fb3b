//! File watching by fingerprint: the policy, its vars files and the CNI conflist are
//! stat()ed every tick (a quarter second) and re-read when the device, inode, size or
//! modification time changes. Polling sees the rename-over that CNI pods and editors do as
//! well as in-place writes, needs no inotify descriptor per directory, and costs a few
//! system calls per tick.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a file looked like (`None`: missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// A set of watched files.
#[derive(Debug, Default)]
pub struct Watch {
    files: Vec<(PathBuf, Option<Fingerprint>)>,
}

impl Watch {
    pub fn new(paths: &[PathBuf]) -> Watch {
        Watch {
            files: paths.iter().map(|p| (p.clone(), fingerprint(p))).collect(),
        }
    }

    /// The files that changed since the last call (or since `new`).
    pub fn changed(&mut self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (p, fp) in &mut self.files {
            let now = fingerprint(p);
            if now != *fp {
                *fp = now;
                out.push(p.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_over_and_a_removal_are_seen() {
        let dir = std::env::temp_dir().join(format!("nq-watch-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("a.conflist");
        std::fs::write(&f, "1").unwrap();
        let mut w = Watch::new(std::slice::from_ref(&f));
        assert!(w.changed().is_empty());
        let tmp = dir.join("tmp");
        std::fs::write(&tmp, "2").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(w.changed(), vec![f.clone()]);
        assert!(w.changed().is_empty());
        std::fs::remove_file(&f).unwrap();
        assert_eq!(w.changed(), vec![f.clone()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
