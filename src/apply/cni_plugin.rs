//! A resource of `apply` for a conflist that names the netqos CNI plugin (`pods { burst }`):
//! an executable `netqos` in the CNI bin dir, checked before the apply changes anything
//! (`record`), since a runtime that cannot find a chained plugin fails every pod sandbox.
//! On request (`--install-plugin`) the running binary is copied there (`apply`, before the
//! conflist resource: temporary file in the same directory, then rename). Rollback leaves
//! an installed binary in place: a conflist without the entry never runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::apply::resource::{Recorded, Resource, ResourceError};
use crate::cni::{flavour, netqos_entry};
use crate::model::Pods;

/// The plugin is missing and may not be installed, or installing it failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

/// The netqos binary a conflist needs in `bin_dir`.
pub struct PluginBinary {
    pub bin_dir: PathBuf,
    /// Copy the running binary there when it is missing.
    pub install: bool,
}

impl PluginBinary {
    /// The resource for `patched` (the conflist apply will write), when it names netqos.
    pub fn needed_by(patched: &str, bin_dir: PathBuf, install: bool) -> Option<PluginBinary> {
        netqos_entry::names_netqos(patched).then_some(PluginBinary { bin_dir, install })
    }

    fn target(&self) -> PathBuf {
        self.bin_dir.join(netqos_entry::TYPE)
    }
}

impl Resource for PluginBinary {
    fn describe(&self) -> String {
        format!("CNI plugin {}", self.target().display())
    }

    fn record(&self, _state: &Path) -> Result<Option<Recorded>, ResourceError> {
        if self.install || is_executable(&self.target()) {
            return Ok(None);
        }
        Err(PluginError(missing(&self.target())).into())
    }

    fn apply(&mut self, _state: &Path) -> Result<String, ResourceError> {
        match ensure_at(&self.bin_dir, self.install)? {
            Some(done) => Ok(done),
            None => Ok(format!("{}: present", self.describe())),
        }
    }
}

fn missing(target: &Path) -> String {
    format!(
        "the patched conflist names the netqos CNI plugin (pods {{ burst }}), but {} is not an executable file: nothing changed. Install the netqos binary there, pass --install-plugin to have apply copy this one, or --cni-bin-dir DIR where the runtime looks",
        target.display()
    )
}

/// The flavour's CNI bin dir (`/opt/cni/bin` when the policy names no flavour).
pub fn bin_dir_for(pods: &Pods) -> PathBuf {
    PathBuf::from(
        pods.cni
            .as_ref()
            .map_or(flavour::OPT_CNI_BIN, |c| flavour::of(c).bin_dir),
    )
}

/// Whether `path` is a regular file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes sure the plugin is in `bin_dir`: `Ok(Some(what was done))`, `Ok(None)` when it
/// was there, `Err` when it is missing and `install` is false, or the copy failed.
fn ensure_at(bin_dir: &Path, install: bool) -> Result<Option<String>, PluginError> {
    let target = bin_dir.join(netqos_entry::TYPE);
    if is_executable(&target) {
        return Ok(None);
    }
    if !install {
        return Err(PluginError(missing(&target)));
    }
    let me = std::env::current_exe()
        .map_err(|e| PluginError(format!("cannot find this binary: {e}")))?;
    copy_in(&me, bin_dir).map_err(|e| {
        PluginError(format!(
            "installing {} as {}: {e}",
            me.display(),
            target.display()
        ))
    })?;
    Ok(Some(format!(
        "installed {} as the netqos CNI plugin {}",
        me.display(),
        target.display()
    )))
}

fn copy_in(from: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".netqos.new.{}", std::process::id()));
    let result = std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, dir.join(netqos_entry::TYPE)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
