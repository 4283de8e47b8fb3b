//! Checks of device names across the policy: valid Linux names that are safe in a shell
//! (NQ030), one block per device and direction (NQ051), and IFB devices for ingress
//! shaping that cannot collide or loop (NQ028, NQ029).

use std::collections::BTreeMap;

use super::build::IfaceDraft;
use super::env::Item;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::Direction;
use crate::span::Span;

/// Why a name is not a safe Linux interface name, if it is not.
#[must_use]
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    if name.len() > 15 {
        return Some(format!(
            "is {} bytes long; Linux allows at most 15 (IFNAMSIZ 16 with the terminating NUL)",
            name.len()
        ));
    }
    if let Some(c) = name.chars().next()
        && !c.is_ascii_alphanumeric()
    {
        return Some(format!(
            "starts with `{c}`; it must start with a letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')))
    {
        let shown = match c {
            ' ' => "a space".to_string(),
            '\t' => "a tab".to_string(),
            c => format!("`{c}`"),
        };
        return Some(format!(
            "contains {shown}; only letters, digits and `_ . @ -` are allowed"
        ));
    }
    None
}

fn check_name(item: &Item, diags: &mut Diagnostics) -> bool {
    match name_problem(&item.text) {
        None => true,
        Some(why) => {
            diags.push(item.label(
                Diagnostic::new(
                    Code::NQ030,
                    format!("interface name `{}` is not a valid Linux interface name: it {why}{}", item.text.escape_debug(), item.origin_note()),
                ),
                "invalid interface name",
            )
            .help("use the device's real name, e.g. `eth0`, `ens3`, `bond0.100`: names must match [A-Za-z0-9][A-Za-z0-9_.@-]{0,14} so generated scripts cannot be tricked"));
            false
        }
    }
}

/// The IFB an ingress block shapes on when it names none: `ifb-DEVICE`, cut to 15 bytes.
#[must_use]
pub fn default_ifb(device: &str) -> String {
    let mut name = format!("ifb-{device}");
    name.truncate(15);
    name
}

/// Checks every interface; returns the IFB name of each draft (ingress only).
pub fn check(ifaces: &[IfaceDraft], diags: &mut Diagnostics) -> Vec<Option<String>> {
    let (seen, valid) = blocks(ifaces, diags);
    let mut owners: BTreeMap<String, Span> = BTreeMap::new();
    ifaces
        .iter()
        .zip(valid)
        .map(|(i, valid)| {
            let dev = i.device.as_ref()?;
            ingress_ifb(i, dev, valid, &seen, &mut owners, diags)
        })
        .collect()
}

/// NQ051 for two blocks on one device and direction, and each device name's problems: the
/// blocks by (device, direction), and whether each block's device name is valid.
fn blocks(
    ifaces: &[IfaceDraft],
    diags: &mut Diagnostics,
) -> (BTreeMap<(String, Direction), Span>, Vec<bool>) {
    let mut seen: BTreeMap<(String, Direction), Span> = BTreeMap::new();
    let mut valid = vec![false; ifaces.len()];
    for (n, i) in ifaces.iter().enumerate() {
        let Some(dev) = &i.device else { continue };
        valid[n] = check_name(dev, diags);
        let key = (dev.text.clone(), i.direction);
        if let Some(first) = seen.get(&key) {
            diags.push(
                Diagnostic::new(
                    Code::NQ051,
                    format!(
                        "`{}` {} is shaped by two interface blocks",
                        dev.text,
                        i.direction.as_str()
                    ),
                )
                .label(i.head, "second block")
                .label(*first, "first block")
                .help("merge the two blocks into one: a device has one root qdisc per direction"),
            );
        } else {
            seen.insert(key, i.head);
        }
    }
    (seen, valid)
}

/// The IFB of an ingress block (`None` for egress or a bad name), with NQ028/NQ029 for IFBs
/// that are misplaced, shaped as interfaces, shared, or themselves redirected.
fn ingress_ifb(
    i: &IfaceDraft,
    dev: &Item,
    valid: bool,
    seen: &BTreeMap<(String, Direction), Span>,
    owners: &mut BTreeMap<String, Span>,
    diags: &mut Diagnostics,
) -> Option<String> {
    if i.direction == Direction::Egress {
        if let Some(ifb) = &i.ifb {
            diags.push(
                ifb.label(
                    Diagnostic::new(
                        Code::NQ028,
                        format!("`ifb` on egress interface `{}`", dev.text),
                    ),
                    "only ingress shaping uses an IFB",
                )
                .help("remove `ifb`, or make this an `ingress` block"),
            );
        }
        return None;
    }
    let ifb = match &i.ifb {
        Some(item) if !check_name(item, diags) => return None,
        Some(item) => item.text.clone(),
        None => default_ifb(&dev.text),
    };
    let ifb_span = i.ifb.as_ref().map_or(i.head, |x| x.span);
    if valid && dev.text.starts_with("ifb") {
        diags.push(dev.label(
            Diagnostic::new(
                Code::NQ029,
                format!("ingress shaping on `{}` would redirect from one IFB device to another", dev.text),
            ),
            "an IFB device",
        )
        .help("mirred redirects from an ifb to an ifb drop every packet (tc-mirred(8)): shape the IFB's egress instead (`interface NAME { … }`)"));
    }
    for (key, span) in seen {
        if key.0 == ifb {
            diags.push(
                Diagnostic::new(
                    Code::NQ028,
                    format!(
                        "IFB `{ifb}` of `{}` ingress is also shaped as an interface",
                        dev.text
                    ),
                )
                .label(ifb_span, format!("uses `{ifb}`"))
                .label(*span, "shaped here too")
                .help("netqos owns the IFB's root qdisc: name a different IFB with `ifb NAME`"),
            );
        }
    }
    if let Some(first) = owners.get(&ifb) {
        diags.push(
            Diagnostic::new(
                Code::NQ028,
                format!("two ingress blocks would shape on the same IFB `{ifb}`"),
            )
            .label(ifb_span, "second user")
            .label(*first, "first user")
            .help("give each ingress block its own IFB with `ifb NAME`"),
        );
    } else {
        owners.insert(ifb.clone(), ifb_span);
    }
    Some(ifb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_problem("eth0").is_none());
        assert!(name_problem("bond0.100").is_none());
        assert!(name_problem("a;id").is_some());
        assert!(name_problem("a$(id)").is_some());
        assert!(name_problem("-x").is_some());
        assert!(name_problem("abcdefghijklmnop").is_some());
        assert!(name_problem("abcdefghijklmno").is_none());
        assert_eq!(default_ifb("enp0s31f6abcdef"), "ifb-enp0s31f6ab");
    }
}
