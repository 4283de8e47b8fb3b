//! A precondition of installing a conflist that names the netqos CNI plugin
//! (`pods { burst }`): an executable `netqos` in the CNI bin dir, checked before the apply
//! changes anything, since a runtime that cannot find a chained plugin fails every pod
//! sandbox. On request the running binary is copied there first (temporary file in the
//! same directory, then rename). Rollback leaves an installed binary in place: a conflist
//! without the entry never runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cni::{flavour, netqos_entry};
use crate::model::Pods;

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

/// Makes sure the plugin is in `bin_dir` when `patched` names it: `Ok(Some(what was
/// done))`, `Ok(None)` when nothing was needed, `Err` (nothing changed) when it is missing
/// and `install` is false, or the copy failed.
pub fn ensure(patched: &str, bin_dir: &Path, install: bool) -> Result<Option<String>, String> {
    if !netqos_entry::names_netqos(patched) {
        return Ok(None);
    }
    let target = bin_dir.join(netqos_entry::TYPE);
    if is_executable(&target) {
        return Ok(None);
    }
    if !install {
        return Err(format!(
            "the patched conflist names the netqos CNI plugin (pods {{ burst }}), but {} is not an executable file: nothing changed. Install the netqos binary there, pass --install-plugin to have apply copy this one, or --cni-bin-dir DIR where the runtime looks",
            target.display()
        ));
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    copy_in(&me, bin_dir).map_err(|e| {
        format!(
            "installing {} as {}: {e}: nothing changed",
            me.display(),
            target.display()
        )
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
