//! File watching by fingerprint: the policy, its vars files and the CNI conflist are
//! stat()ed every tick (a quarter second) and re-read when the device, inode, size or
//! modification time changes. Polling sees the rename-over that CNI pods and editors do as
//! well as in-place writes and costs a few system calls per tick. An inotify descriptor on
//! the files' directories (`wake`: a file written and closed, renamed, created or deleted
//! there) wakes the loop at once instead of at the next tick; what changed is still decided
//! by the fingerprints, so a missed or spurious notification only costs a tick or a stat.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    /// Readable when something happened in a watched file's directory (`None`: no inotify
    /// here; the tick's polling alone).
    notify: Option<OwnedFd>,
}

/// An inotify descriptor (non-blocking) on the directories of `paths`.
fn notifier(paths: &[PathBuf]) -> Option<OwnedFd> {
    use rustix::fs::inotify::{CreateFlags, WatchFlags, add_watch, init};
    let fd = init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mask = WatchFlags::CLOSE_WRITE
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVED_FROM
        | WatchFlags::CREATE
        | WatchFlags::DELETE;
    let watched = dirs
        .iter()
        .filter(|d| add_watch(&fd, d.as_path(), mask).is_ok())
        .count();
    (watched > 0).then_some(fd)
}

impl Watch {
    pub fn new(paths: &[PathBuf]) -> Watch {
        Watch {
            files: paths.iter().map(|p| (p.clone(), fingerprint(p))).collect(),
            notify: notifier(paths),
        }
    }

    /// A descriptor that becomes readable when a watched file may have changed.
    pub fn wake(&self) -> Option<BorrowedFd<'_>> {
        self.notify.as_ref().map(AsFd::as_fd)
    }

    /// The files that changed since the last call (or since `new`).
    pub fn changed(&mut self) -> Vec<PathBuf> {
        if let Some(fd) = &self.notify {
            // Only a wake-up: what changed is what the fingerprints say.
            let mut buf = [0u8; 4096];
            while rustix::io::read(fd, &mut buf).is_ok_and(|n| n > 0) {}
        }
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

    /// Issue 14: a rename over a watched file makes the wake descriptor readable at once
    /// (the loop does not wait for its tick); reading the changes empties it.
    #[test]
    fn a_rename_over_wakes_the_loop() {
        let dir = std::env::temp_dir().join(format!("nq-wake-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("policy.nq");
        std::fs::write(&f, "1").unwrap();
        let mut w = Watch::new(std::slice::from_ref(&f));
        let readable = |w: &Watch| {
            let fd = w.wake().expect("inotify");
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&zero)).unwrap_or(0) > 0
        };
        assert!(!readable(&w));
        let tmp = dir.join(".policy.tmp");
        std::fs::write(&tmp, "2").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(readable(&w));
        assert_eq!(w.changed(), vec![f.clone()]);
        assert!(!readable(&w), "drained");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
