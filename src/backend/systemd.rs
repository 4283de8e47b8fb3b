//! The `systemd` artefact: a oneshot unit that re-applies the policy at boot (tc state does
//! not survive a reboot) and runs the rollback script when stopped.
//!
//! Ordering: the unit binds to the device unit of every interface the plan shapes
//! (`sys-subsystem-net-devices-DEV.device`), because a qdisc needs its device to exist and
//! nothing more (it may be attached while the link is down and survives link flaps). It is
//! also ordered after `network-online.target`, so a network manager that configures the
//! link at boot has finished before the tree is installed, and before the container
//! runtimes and kubelets, so pods never send unshaped traffic. IFB devices are not listed:
//! the apply script creates them. A device that goes away stops the unit (the rollback
//! runs); the device units also want the unit, so when the device comes back (a bond or
//! VLAN recreated) the policy is applied again.

use std::fmt::Write as _;
use std::sync::OnceLock;

use minijinja::{Environment, context};

use crate::plan::Plan;

/// Where the generated artefacts are installed on a node (`cloud-init`, `systemd`).
pub const INSTALL_DIR: &str = "/usr/local/lib/netqos";
/// The installed apply script.
pub const APPLY_PATH: &str = "/usr/local/lib/netqos/netqos-apply.sh";
/// The installed rollback script.
pub const ROLLBACK_PATH: &str = "/usr/local/lib/netqos/netqos-rollback.sh";
/// The unit's name and where it is installed.
pub const UNIT_NAME: &str = "netqos.service";
pub const UNIT_PATH: &str = "/etc/systemd/system/netqos.service";

/// Units of Kubernetes node agents the policy must be in place before (ordering only:
/// `Before=` on a unit that is not installed does nothing).
const BEFORE: &[&str] = &[
    "containerd.service",
    "crio.service",
    "docker.service",
    "kubelet.service",
    "k3s.service",
    "k3s-agent.service",
    "rke2-server.service",
    "rke2-agent.service",
];

const UNIT_TEMPLATE: &str = include_str!("templates/netqos.service.j2");
const AGENT_TEMPLATE: &str = include_str!("templates/netqos-agent.service.j2");

/// The agent unit's name and where it is installed.
pub const AGENT_UNIT_NAME: &str = "netqos-agent.service";
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/netqos-agent.service";
/// Where the agent unit expects the netqos binary and the policy.
pub const BINARY_PATH: &str = "/usr/local/bin/netqos";
pub const POLICY_PATH: &str = "/etc/netqos/policy.nq";
/// The agent's state directory (`StateDirectory=netqos`) and default listen address.
pub const STATE_DIR: &str = "/var/lib/netqos";
pub const AGENT_LISTEN: &str = "127.0.0.1:9787";

/// The name of the device unit udev creates for a network interface: the path
/// `/sys/subsystem/net/devices/NAME` escaped the way `systemd-escape --path` does.
#[must_use]
pub fn device_unit(device: &str) -> String {
    let mut out = String::from("sys-subsystem-net-devices-");
    for (i, b) in device.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && i > 0) || b == b':';
        if plain {
            out.push(char::from(b));
        } else if b == b'/' {
            out.push('-');
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push_str(".device");
    out
}

/// A value for a unit file setting: `%` starts a specifier and `\` an escape, so both are
/// doubled; control characters (which would end the line) become `?`.
fn unit_value(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '%' => "%%".to_string(),
            '\\' => "\\\\".to_string(),
            c if c.is_control() => "?".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The units' templates, compiled once per process (they cannot be overridden).
fn env() -> Result<&'static Environment<'static>, minijinja::Error> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| build_env().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.clone()))
}

fn build_env() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("unit", UNIT_TEMPLATE)?;
    env.add_template("agent-unit", AGENT_TEMPLATE)?;
    Ok(env)
}

/// Renders the unit for a plan compiled from the policy named `source`.
pub fn unit(plan: &Plan, source: &str) -> Result<String, minijinja::Error> {
    let mut devices: Vec<String> = plan
        .devices
        .iter()
        .map(|d| device_unit(&d.device))
        .collect();
    devices.sort();
    devices.dedup();
    let out = env()?.get_template("unit")?.render(context! {
        source => unit_value(source),
        devices => devices,
        before => BEFORE.join(" "),
        apply => APPLY_PATH,
        rollback => ROLLBACK_PATH,
    })?;
    Ok(super::with_newline(out))
}

/// The `agent-service` artefact: `netqos agent` as a `Type=notify` service with a
/// watchdog, restart on failure, and hardening that keeps only `CAP_NET_ADMIN`. `cni_dir`:
/// the directory of the conflist the agent keeps patched (writable to it), if any.
pub fn agent_unit(source: &str, cni_dir: Option<&str>) -> Result<String, minijinja::Error> {
    let out = env()?.get_template("agent-unit")?.render(context! {
        source => unit_value(source),
        policy => POLICY_PATH,
        binary => BINARY_PATH,
        state_dir => STATE_DIR,
        listen => AGENT_LISTEN,
        before => BEFORE.join(" "),
        oneshot => UNIT_NAME,
        cni_dir => cni_dir.map(unit_value),
    })?;
    Ok(super::with_newline(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_units_are_escaped_like_systemd_escape() {
        assert_eq!(device_unit("eth0"), "sys-subsystem-net-devices-eth0.device");
        assert_eq!(
            device_unit("bond0.100"),
            "sys-subsystem-net-devices-bond0.100.device"
        );
        assert_eq!(
            device_unit("veth-a@b"),
            "sys-subsystem-net-devices-veth\\x2da\\x40b.device"
        );
    }

    #[test]
    fn unit_values_escape_specifiers() {
        assert_eq!(unit_value("50%\\x\n"), "50%%\\\\x?");
    }
}
