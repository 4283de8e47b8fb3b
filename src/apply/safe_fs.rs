//! File access in directories netqos owns (the state directory, its backups, the device
//! locks): a symlink is never followed (`O_NOFOLLOW`), every descriptor is `O_CLOEXEC`
//! (std's default), temporary files are created exclusively (`O_EXCL`, mode 0600) and
//! renamed into place, and a directory netqos would trust must belong to this user and be
//! writable by nobody else.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::apply::device_lock::nofollow;

/// Opens `path` for reading; a symlink there is an error (ELOOP).
pub fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
}

/// Reads `path` whole without following a symlink.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open_read(path)?.read_to_end(&mut out)?;
    Ok(out)
}

/// Reads `path` as UTF-8 without following a symlink.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?).map_err(std::io::Error::other)
}

/// Options for a file netqos keeps open (lock, journal, log): created 0600 when missing,
/// never through a symlink.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600).custom_flags(nofollow());
    o
}

/// Creates `tmp` exclusively (a stale one from a dead process of the same pid is removed
/// first: `remove_file` removes a symlink, never its target), writes `bytes`, fsyncs.
pub fn create_exclusive(tmp: &Path, bytes: &[u8], mode: u32) -> std::io::Result<File> {
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nofollow())
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(f)
}

/// Why a directory is not one netqos may trust, if it is not.
pub fn unsafe_dir(path: &Path) -> std::io::Result<Option<String>> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(Some("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Ok(Some("is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Ok(Some(format!(
            "is owned by user {}, not by this user ({me})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Ok(Some(format!(
            "is writable by {} (mode {mode:04o})",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            }
        )));
    }
    Ok(None)
}
