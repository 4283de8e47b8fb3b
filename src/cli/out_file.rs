//! An artefact file streamed to disk: written into a temporary file in its directory as it
//! is rendered, then renamed over the old file only when the contents changed (a Makefile
//! sees an unchanged artefact's old modification time). Nothing of the file is held in
//! memory, and the comparison with the old file reads both in chunks.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A file being written; [`OutFile::commit`] puts it in place, dropping it without a
/// commit removes the temporary file.
pub struct OutFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
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
            tmp,
            file: Some(BufWriter::with_capacity(1 << 18, file)),
        })
    }

    /// Puts the file in place (synced, with the old file's permissions) unless the old one
    /// holds the same bytes: whether it changed.
    pub fn commit(mut self) -> io::Result<bool> {
        let Some(buffered) = self.file.take() else {
            return Ok(false);
        };
        let file = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        if same_content(&file, &self.path)? {
            return Ok(false);
        }
        file.sync_all()?;
        if let Ok(meta) = std::fs::metadata(&self.path) {
            std::fs::set_permissions(&self.tmp, meta.permissions())?;
        }
        std::fs::rename(&self.tmp, &self.path)?;
        Ok(true)
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), BufWriter::flush)
    }
}

impl Drop for OutFile {
    /// The temporary file goes unless it became the file.
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
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
