//! One lock per device, whatever the state directory: a `flock(2)` on
//! `/run/netqos/dev/NETNS-IFINDEX.lock` (the network namespace's inode and the device's
//! ifindex), held by every netqos process while it changes that device (apply, rollback,
//! the confirm revert, an agent). A dead holder releases it. flock belongs to the open file,
//! so two transactions of one long-running process exclude each other as two processes do.
//! Locks are taken in (namespace, ifindex) order, so two holders never wait on each other.
//! Before its devices, a holder takes `/run/netqos/dev/ns-NETNS.lock` *shared* for each
//! namespace: the apply and rollback scripts take that lock exclusively, so a script and a
//! live change never interleave in one namespace while live changes of different devices
//! still run side by side.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::exit::Exit;

/// Where the device locks live by default.
pub const LOCK_DIR: &str = "/run/netqos/dev";

/// A device's identity: its network namespace (the inode of `/proc/self/ns/net`) and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceId {
    pub netns: u64,
    pub ifindex: i32,
}

/// A device lock that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "device {device} is being changed by another netqos{}; wait for it to finish",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Busy {
        device: String,
        holder: Option<String>,
    },
    #[error(transparent)]
    Kernel(#[from] crate::apply::kernel::KernelError),
    #[error("cannot lock device {device} ({}): {source}", path.display())]
    Io {
        device: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    /// Exit 3: nothing was changed.
    pub fn exit(&self) -> Exit {
        Exit::Io
    }
}

/// The held device locks; released when dropped.
#[derive(Debug, Default)]
pub struct DeviceLocks {
    /// The namespace locks, held shared.
    namespaces: Vec<File>,
    held: Vec<(DeviceId, File)>,
}

impl DeviceLocks {
    /// The devices held.
    pub fn ids(&self) -> Vec<DeviceId> {
        self.held.iter().map(|(id, _)| *id).collect()
    }

    /// Takes the lock of every device in `devices` under `dir` (`wait`: block until free).
    /// `who` is written into each lock file for the refusal message of the next one.
    pub fn acquire(
        dir: &Path,
        devices: &[(String, DeviceId)],
        wait: bool,
        who: &str,
    ) -> Result<DeviceLocks, LockError> {
        let mut sorted: Vec<&(String, DeviceId)> = devices.iter().collect();
        sorted.sort_by_key(|(_, id)| *id);
        sorted.dedup_by_key(|(_, id)| *id);
        let mut locks = DeviceLocks::default();
        let mut namespaces: Vec<u64> = sorted.iter().map(|(_, id)| id.netns).collect();
        namespaces.dedup();
        for netns in namespaces {
            let device = sorted
                .iter()
                .find(|(_, id)| id.netns == netns)
                .map_or("", |(name, _)| name.as_str());
            let path = dir.join(format!("ns-{netns}.lock"));
            locks
                .namespaces
                .push(lock_file(dir, &path, device, wait, Mode::Shared)?);
        }
        for (name, id) in sorted {
            let file = lock_one(dir, name, *id, wait)?;
            let mut f = &file;
            let _ = file.set_len(0).and_then(|()| writeln!(f, "{who}"));
            locks.held.push((*id, file));
        }
        Ok(locks)
    }
}

fn lock_one(dir: &Path, device: &str, id: DeviceId, wait: bool) -> Result<File, LockError> {
    let path = dir.join(format!("{}-{}.lock", id.netns, id.ifindex));
    lock_file(dir, &path, device, wait, Mode::Exclusive)
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Shared,
    Exclusive,
}

fn lock_file(
    dir: &Path,
    path: &Path,
    device: &str,
    wait: bool,
    mode: Mode,
) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        device: device.to_string(),
        path: path.to_path_buf(),
        source,
    };
    create_private_dir(dir).map_err(io)?;
    if let Some(why) = crate::apply::safe_fs::unsafe_dir(dir).map_err(io)? {
        return Err(io(std::io::Error::other(format!(
            "{} {why}: refusing locks others could tamper with",
            dir.display()
        ))));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
        .map_err(io)?;
    let taken = match (mode, wait) {
        (Mode::Exclusive, true) => return file.lock().map(|()| file).map_err(io),
        (Mode::Shared, true) => return file.lock_shared().map(|()| file).map_err(io),
        (Mode::Exclusive, false) => file.try_lock(),
        (Mode::Shared, false) => file.try_lock_shared(),
    };
    match taken {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy {
            device: device.to_string(),
            holder: match mode {
                Mode::Shared => Some("a netqos apply or rollback script".to_string()),
                Mode::Exclusive => std::fs::read_to_string(path)
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty()),
            },
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Locks the existing devices among `names` in the kernel's lock directory (none for a
/// kernel without one, like most in-memory ones). Returns the locks and the identities
/// they pin: changes, verification and undo must find the same devices there.
pub fn lock_devices(
    kernel: &mut dyn crate::apply::kernel::Kernel,
    names: &[String],
    wait: bool,
    who: &str,
) -> Result<(DeviceLocks, Vec<(String, DeviceId)>), LockError> {
    let Some(dir) = kernel.lock_dir() else {
        return Ok((DeviceLocks::default(), Vec::new()));
    };
    let ids = kernel.device_ids(names)?;
    Ok((DeviceLocks::acquire(&dir, &ids, wait, who)?, ids))
}

/// `O_NOFOLLOW`: a symlink planted where a lock or state file goes is refused, not followed.
pub fn nofollow() -> i32 {
    i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0)
}

/// Creates `dir` (and parents) with mode 0700 where missing.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The identity of this thread's network namespace.
pub fn current_netns() -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_device_refuses_a_second_holder_even_in_the_same_process() {
        let dir = std::env::temp_dir().join(format!("netqos-devlock-{}", std::process::id()));
        let id = DeviceId {
            netns: 1,
            ifindex: 7,
        };
        let devs = [("eth0".to_string(), id)];
        let held = DeviceLocks::acquire(&dir, &devs, false, "process 1").unwrap();
        let e = DeviceLocks::acquire(&dir, &devs, false, "process 2").unwrap_err();
        assert!(
            e.to_string().contains("device eth0 is being changed")
                && e.to_string().contains("process 1"),
            "{e}"
        );
        assert_eq!(held.ids(), [id]);
        drop(held);
        DeviceLocks::acquire(&dir, &devs, false, "process 2").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn live_changes_share_the_namespace_and_a_script_holding_it_refuses_them() {
        let dir = std::env::temp_dir().join(format!("netqos-nslock-{}", std::process::id()));
        let dev = |ifindex| DeviceId { netns: 9, ifindex };
        let eth0 = [("eth0".to_string(), dev(2))];
        let eth1 = [("eth1".to_string(), dev(3))];
        // Two live changes of different devices in one namespace run side by side.
        let a = DeviceLocks::acquire(&dir, &eth0, false, "apply").unwrap();
        let b = DeviceLocks::acquire(&dir, &eth1, false, "agent").unwrap();
        drop((a, b));
        // A script holds the namespace lock exclusively, as `flock 9` in the scripts does.
        let script = File::create(dir.join("ns-9.lock")).unwrap();
        script.lock().unwrap();
        let e = DeviceLocks::acquire(&dir, &eth0, false, "apply").unwrap_err();
        assert!(e.to_string().contains("script"), "{e}");
        drop(script);
        DeviceLocks::acquire(&dir, &eth0, false, "apply").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
