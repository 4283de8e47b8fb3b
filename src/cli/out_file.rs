//! An artefact file streamed to disk: written into a temporary file in its directory as it
//! is rendered, then renamed over the old file only when the contents changed (a Makefile
//! sees an unchanged artefact's old modification time). Nothing of the file is held in
//! memory, and the comparison with the old file reads both in chunks; it and the sync run
//! on a thread of their own between [`OutFile::finish`] and [`Written::commit`].

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// A file being written; [`OutFile::finish`] ends it, dropping it unfinished removes the
/// temporary file.
pub struct OutFile {
    path: PathBuf,
    tmp: TempPath,
    file: Option<BufWriter<File>>,
}

/// A file written in full: in the background it is compared with the old file and, when
/// it differs, synced to disk (so a big file's sync overlaps the rendering of the next);
/// [`Written::commit`] puts it in place, dropping it removes the temporary file.
pub struct Written {
    path: PathBuf,
    tmp: TempPath,
    changed: Changed,
}

/// The temporary file, removed when dropped unless it became the file.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl OutFile {
    /// Starts writing `path` (its directory must exist).
    pub fn create(path: &Path) -> io::Result<OutFile> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map_or("netqos".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.netqos-tmp-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        Ok(OutFile {
            path: path.to_path_buf(),
            tmp: TempPath(tmp),
            file: Some(BufWriter::with_capacity(1 << 18, file)),
        })
    }

    /// Ends writing: the comparison with the old file and the sync run in the background.
    pub fn finish(mut self) -> io::Result<Written> {
        let Some(buffered) = self.file.take() else {
            return Err(io::Error::other("file already finished"));
        };
        let file = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        let file = std::sync::Arc::new(file);
        let (theirs, old) = (file.clone(), self.path.clone());
        let changed = match std::thread::Builder::new().spawn(move || changed(&theirs, &old)) {
            Ok(h) => Changed::Later(h),
            // No thread to be had (a task limit): compared and synced here, now.
            Err(_) => Changed::Now(changed(&file, &self.path)),
        };
        Ok(Written {
            path: self.path,
            tmp: self.tmp,
            changed,
        })
    }
}

/// Whether the written file differs from the old one (and is synced), once known.
enum Changed {
    Later(JoinHandle<io::Result<bool>>),
    Now(io::Result<bool>),
}

impl Written {
    /// Puts the file in place (synced, with the old file's permissions) unless the old one
    /// holds the same bytes: whether it changed.
    pub fn commit(self) -> io::Result<bool> {
        let changed = match self.changed {
            Changed::Later(h) => h
                .join()
                .map_err(|_| io::Error::other("comparing or syncing the file failed"))??,
            Changed::Now(r) => r?,
        };
        if !changed {
            return Ok(false);
        }
        if let Ok(meta) = std::fs::metadata(&self.path) {
            std::fs::set_permissions(&self.tmp.0, meta.permissions())?;
        }
        std::fs::rename(&self.tmp.0, &self.path)?;
        Ok(true)
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("file already finished")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("file already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), BufWriter::flush)
    }
}

/// Whether `new` (just written) differs from the file at `old`; if so, it is synced.
fn changed(new: &File, old: &Path) -> io::Result<bool> {
    if same_content(new, old)? {
        return Ok(false);
    }
    new.sync_all()?;
    Ok(true)
}

/// Whether the file at `old` holds exactly what `new` (just written) holds; sizes first.
fn same_content(new: &File, old: &Path) -> io::Result<bool> {
    let Ok(meta) = std::fs::metadata(old) else {
        return Ok(false);
    };
    if !meta.is_file() || meta.len() != new.metadata()?.len() {
        return Ok(false);
    }
    let Ok(mut a) = File::open(old) else {
        return Ok(false);
    };
    let mut b = new.try_clone()?;
    std::io::Seek::rewind(&mut b)?;
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        if read_full(&mut b, &mut y)? != n || x[..n] != y[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
