//! The CNI protocol as the netqos plugin speaks it (spec 1.0 and 1.1): the command and its
//! environment, the network configuration on stdin (with `prevResult` and the `bandwidth`
//! runtime config), and the spec's error object. Pure: `plugin::run` does the I/O.

use serde_json::{Map, Value, json};

use crate::cni::burst::{BurstError, PodBurst};

/// The versions whose configurations and results the plugin reads (chained plugins get the
/// previous result in the configuration's version; netqos passes it through unchanged).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version the plugin answers VERSION and errors without a configuration in.
pub const LATEST: &str = "1.1.0";

/// Well-known error codes of the spec, and the plugin's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    /// ADD could not set the bucket of a tbf `bandwidth` made (the sandbox fails).
    pub const NOT_ADJUSTED: u32 = 100;
    /// CHECK found a tbf whose bucket is not the configured one.
    pub const DRIFT: u32 = 101;
}

/// A spec error: `{"cniVersion", "code", "msg", "details"}` on stdout, exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn to_json(&self, version: &str) -> String {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        format!("{v}\n")
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// Rates and bursts (bits) `bandwidth` got for this sandbox, from `runtimeConfig.bandwidth`
/// (containerd and CRI-O send the Go field names, `IngressRate`, libcni users the tagged
/// `ingressRate`: read case-insensitively, as Go does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

impl Bandwidth {
    /// `bandwidth` makes the host veth's tbf only when both are set.
    pub fn ingress(&self) -> bool {
        self.ingress_rate > 0 && self.ingress_burst > 0
    }

    pub fn egress(&self) -> bool {
        self.egress_rate > 0 && self.egress_burst > 0
    }
}

/// The plugin's configuration: its conflist entry with the list's `name` and `cniVersion`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub version: String,
    /// The network name (`bandwidth` derives its IFB's name from it).
    pub name: String,
    pub burst: PodBurst,
    pub bandwidth: Bandwidth,
    /// The previous plugin's result, passed through unchanged.
    pub prev_result: Option<Value>,
}

/// Reads the configuration. `Err` is the spec error to print.
pub fn parse_config(stdin: &[u8]) -> Result<Config, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "failed to parse network configuration",
            e.to_string(),
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err(CniError::new(
            code::DECODE,
            "failed to parse network configuration",
            "the configuration is not a JSON object",
        ));
    };
    let version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !SUPPORTED.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {version:?}"),
            format!("netqos supports {}", SUPPORTED.join(", ")),
        ));
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let burst_text = match obj.get("burst") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "`burst` must be a string such as \"20ms\" or \"65536b\"",
                format!("got {other}"),
            ));
        }
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the netqos entry has no `burst`",
                "write e.g. {\"type\":\"netqos\",\"burst\":\"20ms\",\"capabilities\":{\"bandwidth\":true}}",
            ));
        }
    };
    let burst = PodBurst::parse(&burst_text).map_err(|e| {
        let why = match e {
            BurstError::Zero => "is zero",
            BurstError::BitUnit => "is a size in bits",
            BurstError::Unreadable => "is neither a duration nor a size",
        };
        CniError::new(
            code::INVALID_CONFIG,
            format!("`burst` {burst_text:?} {why}"),
            "a duration (us, ms, s) or a size in bytes (b, kb, kib, mb, mib)",
        )
    })?;
    let bandwidth = obj
        .get("runtimeConfig")
        .and_then(|r| get_ci(r.as_object()?, "bandwidth"))
        .and_then(Value::as_object)
        .map(bandwidth_of)
        .transpose()?
        .unwrap_or_default();
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(Value::Object(p.clone())),
        Some(_) => {
            return Err(CniError::new(
                code::DECODE,
                "could not parse prevResult",
                "prevResult is not an object",
            ));
        }
    };
    Ok(Config {
        version,
        name,
        burst,
        bandwidth,
        prev_result,
    })
}

/// A key of `obj` regardless of case (Go's `encoding/json` matches this way).
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn bandwidth_of(obj: &Map<String, Value>) -> Result<Bandwidth, CniError> {
    let n = |k: &str| -> Result<u64, CniError> {
        match get_ci(obj, k) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                CniError::new(
                    code::DECODE,
                    format!("runtimeConfig.bandwidth.{k} is not an unsigned integer"),
                    format!("got {v}"),
                )
            }),
        }
    };
    Ok(Bandwidth {
        ingress_rate: n("ingressRate")?,
        ingress_burst: n("ingressBurst")?,
        egress_rate: n("egressRate")?,
        egress_burst: n("egressBurst")?,
    })
}

/// The answer to VERSION.
pub fn version_json() -> String {
    format!(
        "{}\n",
        json!({"cniVersion": LATEST, "supportedVersions": SUPPORTED})
    )
}

/// The names of the host-side interfaces of `prevResult` (no `sandbox`, or an empty one).
pub fn host_interfaces(prev: &Value) -> Vec<String> {
    prev.get("interfaces")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|i| {
                    i.get("sandbox")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                })
                .filter_map(|i| i.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The result ADD prints: the previous result, in the configuration's version.
pub fn pass_through(config: &Config) -> String {
    let mut prev = config
        .prev_result
        .clone()
        .unwrap_or_else(|| json!({"cniVersion": config.version}));
    if prev.get("cniVersion").is_none() {
        prev["cniVersion"] = json!(config.version);
    }
    format!("{prev}\n")
}

/// Whether `version` knows CHECK (0.4.0 and later).
pub fn has_check(version: &str) -> bool {
    !version.starts_with("0.3.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Vec<u8> {
        format!(r#"{{"cniVersion":"1.0.0","name":"cbr0","type":"netqos","burst":"20ms"{extra}}}"#)
            .into_bytes()
    }

    #[test]
    fn reads_containerd_runtime_config_case_insensitively() {
        let c = parse_config(&conf(
            r#","runtimeConfig":{"bandwidth":{"IngressRate":1000000,"IngressBurst":4294967295,"EgressRate":2000000,"EgressBurst":4294967295}}"#,
        ))
        .unwrap();
        assert_eq!(c.bandwidth.ingress_rate, 1_000_000);
        assert_eq!(c.bandwidth.egress_rate, 2_000_000);
        assert!(c.bandwidth.ingress() && c.bandwidth.egress());
        assert_eq!(c.burst, PodBurst::Duration { us: 20_000 });
    }

    #[test]
    fn refusals_carry_spec_codes() {
        assert_eq!(parse_config(b"{").unwrap_err().code, code::DECODE);
        assert_eq!(
            parse_config(br#"{"cniVersion":"9.9.9","burst":"20ms"}"#)
                .unwrap_err()
                .code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            parse_config(br#"{"cniVersion":"1.0.0"}"#).unwrap_err().code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            parse_config(br#"{"cniVersion":"1.0.0","burst":"fast"}"#)
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn host_side_interfaces_have_no_sandbox() {
        let prev = json!({"interfaces": [
            {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}, {"name": "cni0", "sandbox": ""}
        ]});
        assert_eq!(host_interfaces(&prev), vec!["veth1", "cni0"]);
    }
}
