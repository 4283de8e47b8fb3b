//! What `doctor` reads from a node, behind [`Node`] so the findings are unit-testable:
//! [`FsNode`] reads a filesystem under a prefix (`/` for the live node, a directory for an
//! image or a test tree) and runs CNI plugins found there with a timeout.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::probe::Cap;

/// One network device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    /// Mbit/s; `None` when the device reports none (down, or virtual without a speed).
    pub speed_mbit: Option<u64>,
    /// Number of TX queues (`queues/tx-*`).
    pub tx_queues: usize,
}

/// What a CNI plugin binary said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginVersion {
    /// The release from the plugin's about text (`CNI bandwidth plugin v1.6.2`), if printed.
    pub release: Option<String>,
    /// `supportedVersions` from the CNI `VERSION` command.
    pub spec_versions: Vec<String>,
}

/// The node as `doctor` sees it. Paths are absolute node paths (`/etc/cni/net.d`).
pub trait Node {
    /// How the node is named in messages (`/`, or the `--root` directory).
    fn describe(&self) -> String;
    /// False when the node cannot be read at all (exit 3).
    fn readable(&self) -> Result<(), String>;
    fn read(&self, path: &str) -> Option<String>;
    fn exists(&self, path: &str) -> bool;
    /// File names in a directory, sorted; empty when it is missing.
    fn list(&self, dir: &str) -> Vec<String>;
    /// The network devices, sorted by name.
    fn links(&self) -> Vec<LinkInfo>;
    /// Root qdisc kind per device (`mq`, `noqueue`, `htb`, …), when the kernel can be asked.
    fn root_qdiscs(&self, devices: &[String]) -> Option<Vec<(String, String)>>;
    /// Runs a CNI plugin's `VERSION` command (and its about text).
    fn plugin_version(&self, path: &str) -> Result<PluginVersion, String>;
    /// Probes kernel features in a scratch namespace (`probe::run`); `None`: this node's
    /// kernel is not the one running (`--root`), nothing is probed.
    fn probe(&self, _caps: &[Cap]) -> Option<ProbeResults> {
        None
    }
}

/// Each feature probed and whether it worked, or why nothing could be probed.
pub type ProbeResults = Result<Vec<(Cap, Result<(), String>)>, String>;

/// A node read from the filesystem under `root`; the kernel is asked (over rtnetlink) only
/// when `root` is `/`.
pub struct FsNode {
    pub root: PathBuf,
    /// How long a plugin may take to answer.
    pub timeout: Duration,
}

impl FsNode {
    pub fn new(root: &Path) -> FsNode {
        FsNode {
            root: root.to_path_buf(),
            timeout: Duration::from_secs(3),
        }
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn live(&self) -> bool {
        self.root == Path::new("/")
    }
}

impl Node for FsNode {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn readable(&self) -> Result<(), String> {
        match std::fs::read_dir(&self.root) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("cannot read {}: {e}", self.root.display())),
        }
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.at(path)).ok()
    }

    fn exists(&self, path: &str) -> bool {
        self.at(path).exists()
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.at(dir))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn links(&self) -> Vec<LinkInfo> {
        self.list("/sys/class/net")
            .into_iter()
            .map(|name| {
                let base = format!("/sys/class/net/{name}");
                let speed_mbit = self
                    .read(&format!("{base}/speed"))
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .filter(|s| *s > 0)
                    .map(|s| s as u64);
                let tx_queues = self
                    .list(&format!("{base}/queues"))
                    .iter()
                    .filter(|q| q.starts_with("tx-"))
                    .count();
                LinkInfo {
                    name,
                    speed_mbit,
                    tx_queues,
                }
            })
            .collect()
    }

    fn root_qdiscs(&self, devices: &[String]) -> Option<Vec<(String, String)>> {
        if !self.live() {
            return None;
        }
        use crate::apply::kernel::{Kernel, NetlinkKernel};
        let mut k = NetlinkKernel::open().ok()?;
        let live = k.read(devices).ok()?;
        Some(
            live.devs
                .iter()
                .filter_map(|d| Some((d.name.clone(), d.root.as_ref()?.kind.name().to_string())))
                .collect(),
        )
    }

    fn probe(&self, caps: &[Cap]) -> Option<ProbeResults> {
        self.live().then(|| super::probe::run(caps))
    }

    fn plugin_version(&self, path: &str) -> Result<PluginVersion, String> {
        let bin = self.at(path);
        let version = run_plugin(&bin, Some("VERSION"), self.timeout)?;
        let spec_versions = serde_json::from_str::<serde_json::Value>(&version.0)
            .ok()
            .and_then(|v| {
                v.get("supportedVersions")?.as_array().map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
            })
            .ok_or_else(|| {
                format!(
                    "{} answered VERSION with no supportedVersions: {:?}",
                    bin.display(),
                    version.0.trim()
                )
            })?;
        // Without CNI_COMMAND, the reference plugins print their about text on stderr.
        let release = run_plugin(&bin, None, self.timeout)
            .ok()
            .and_then(|(out, err)| {
                format!("{out}\n{err}")
                    .split_whitespace()
                    .find(|w| {
                        w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit())
                    })
                    .map(str::to_string)
            });
        Ok(PluginVersion {
            release,
            spec_versions,
        })
    }
}

/// Runs a plugin with `CNI_COMMAND` (or none) and `{"cniVersion":"1.0.0"}` on stdin; stdout
/// and stderr, or why not. Killed after `timeout`.
fn run_plugin(
    bin: &Path,
    command: Option<&str>,
    timeout: Duration,
) -> Result<(String, String), String> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(c) = command {
        cmd.env("CNI_COMMAND", c);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(br#"{"cniVersion":"1.0.0"}"#);
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer within {:?}",
                    bin.display(),
                    timeout
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {}: {e}", bin.display())),
        }
    }
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    Ok((out, err))
}
