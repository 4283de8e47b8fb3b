//! netqos as a chained CNI plugin: the binary acts as one when `CNI_COMMAND` is set, as
//! runtimes run plugins. Chained right after `bandwidth` as
//! `{"type":"netqos","burst":"20ms","capabilities":{"bandwidth":true}}`, it sets the bucket
//! of the tbf qdiscs `bandwidth` made for the sandbox on ADD (the pod's limits then hold
//! from the first byte), reports a bucket that drifted on CHECK, and has nothing to remove
//! on DEL (the tbfs go with the veth and the IFB). The result is `prevResult`, unchanged.
//!
//! When a tbf the runtime config asks for cannot be adjusted, ADD fails (code 100): the
//! runtime tears the sandbox down and retries, and its error names the cause. A pod that
//! does not start is visible and retried; a limit that silently passes hundreds of
//! megabytes is not. Every adjustment is logged on stderr, which runtimes put in their log.
//!
//! * `protocol` — commands, configuration, results and errors (pure).
//! * `sandbox` — finding and adjusting the tbfs over netlink.

pub mod protocol;
pub mod sandbox;

use std::io::{Read, Write};
use std::process::ExitCode;

use protocol::{CniError, Command, Config, code};

use crate::apply::netlink::Netlink;

/// What a plugin run prints: stdout, stderr lines, and whether it succeeded.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub log: Vec<String>,
    pub ok: bool,
}

/// The `CNI_*` environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Env {
    pub fn from_process() -> Env {
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
        }
    }
}

/// The entry point when `CNI_COMMAND` is set.
pub fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let out = match read {
        Ok(_) => run(&env, &stdin),
        Err(e) => failure(
            protocol::LATEST,
            CniError::new(code::IO, "failed to read stdin", e.to_string()),
        ),
    };
    let mut err = std::io::stderr().lock();
    for line in &out.log {
        let _ = writeln!(err, "{line}");
    }
    let _ = std::io::stdout().lock().write_all(out.stdout.as_bytes());
    if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn failure(version: &str, e: CniError) -> Outcome {
    Outcome {
        stdout: e.to_json(version),
        log: vec![format!(
            "netqos: {}{}",
            e.msg,
            if e.details.is_empty() {
                String::new()
            } else {
                format!(": {}", e.details)
            }
        )],
        ok: false,
    }
}

fn success(stdout: String, log: Vec<String>) -> Outcome {
    Outcome {
        stdout,
        log,
        ok: true,
    }
}

/// One plugin invocation.
pub fn run(env: &Env, stdin: &[u8]) -> Outcome {
    let Some(command) = Command::parse(&env.command) else {
        return failure(
            protocol::LATEST,
            CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {:?}", env.command),
                "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
            ),
        );
    };
    if command == Command::Version {
        return success(protocol::version_json(), Vec::new());
    }
    let config = match protocol::parse_config(stdin) {
        Ok(c) => c,
        Err(e) => {
            // A DEL must not block the teardown of a sandbox whose config broke later,
            // but an unreadable config is still reported.
            return failure(version_of(stdin), e);
        }
    };
    let v = config.version.clone();
    match command {
        Command::Version => success(protocol::version_json(), Vec::new()),
        // Nothing to remove (the tbfs go with their devices) or collect, and nothing to
        // wait for.
        Command::Del | Command::Gc => success(String::new(), Vec::new()),
        Command::Status => {
            if v != "1.1.0" {
                return failure(
                    &v,
                    CniError::new(
                        code::INCOMPATIBLE_VERSION,
                        format!("STATUS needs CNI 1.1.0, the config is {v}"),
                        "",
                    ),
                );
            }
            match Netlink::open() {
                Ok(_) => success(String::new(), Vec::new()),
                Err(e) => failure(
                    &v,
                    CniError::new(50, "netlink is not available", e.to_string()),
                ),
            }
        }
        Command::Add => with_targets(env, &config, |nl, targets| {
            let mut log = Vec::new();
            let burst = config.burst.config_text();
            for t in targets {
                let a = sandbox::adjust(nl, t, &config)?;
                log.push(a.log_line(&env.container_id, &burst));
            }
            Ok(success(protocol::pass_through(&config), log))
        }),
        Command::Check => {
            if !protocol::has_check(&v) {
                return failure(
                    &v,
                    CniError::new(
                        code::INCOMPATIBLE_VERSION,
                        format!("CHECK needs CNI 0.4.0 or later, the config is {v}"),
                        "",
                    ),
                );
            }
            with_targets(env, &config, |nl, targets| {
                for t in targets {
                    sandbox::check(nl, t, &config)?;
                }
                Ok(success(String::new(), Vec::new()))
            })
        }
    }
}

/// Runs `f` over the sandbox's tbf devices; the pass-through when it has no limits.
fn with_targets(
    env: &Env,
    config: &Config,
    f: impl FnOnce(&mut Netlink, &[sandbox::Target]) -> Result<Outcome, CniError>,
) -> Outcome {
    let v = config.version.as_str();
    if config.prev_result.is_none() {
        return failure(
            v,
            CniError::new(
                code::INVALID_CONFIG,
                "must be called as a chained plugin",
                "no prevResult: put netqos right after bandwidth in the conflist",
            ),
        );
    }
    for (name, value) in [
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_NETNS", &env.netns),
        ("CNI_IFNAME", &env.ifname),
    ] {
        if value.is_empty() {
            return failure(
                v,
                CniError::new(code::INVALID_ENV, format!("{name} is not set"), ""),
            );
        }
    }
    if !config.bandwidth.ingress() && !config.bandwidth.egress() {
        // No limit on this pod: bandwidth made no tbf.
        return success(protocol::pass_through(config), Vec::new());
    }
    let result = Netlink::open()
        .map_err(|e| CniError::new(code::IO, "netlink: open", e.to_string()))
        .and_then(|mut nl| {
            let targets =
                sandbox::targets(&mut nl, config, &env.container_id, &env.netns, &env.ifname)?;
            f(&mut nl, &targets)
        });
    result.unwrap_or_else(|e| failure(v, e))
}

/// The configuration's version for an error about it, when it can be read at all.
fn version_of(stdin: &[u8]) -> &'static str {
    let v: Option<String> = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string));
    protocol::SUPPORTED
        .iter()
        .find(|s| Some(**s) == v.as_deref())
        .copied()
        .unwrap_or(protocol::LATEST)
}
