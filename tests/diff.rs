//! `netqos diff`: one raised (or lowered) class rate is one change in words (exit 1); equal or merely
//! reformatted policies print nothing (exit 0); a review-sized edit is snapshotted in every
//! format; removed classes say where their traffic goes; exit statuses like diff(1).

use crate::support::*;
use netqos::diff::diff;
use netqos::model::Model;
use netqos::vars::ExternalVars;

fn model(src: &str) -> Model {
    netqos::check_source(src, &ExternalVars::default())
        .model
        .unwrap_or_else(|| panic!("checks:\n{src}"))
}

/// The policy with one class's rate raised (`up`) or lowered by 10%, the first class where
/// that stays valid, and that class's name.
fn edit_one_class_rate(src: &str, up: bool) -> Option<(String, String)> {
    let mut at = 0;
    while let Some(i) = src[at..].find("    class ") {
        let class_at = at + i + 4;
        at = class_at + 1;
        let name_end = class_at + 6 + src[class_at + 6..].find([' ', '{']).unwrap();
        let name = &src[class_at + 6..name_end];
        let rate_at = class_at + src[class_at..].find("rate ").unwrap() + 5;
        let value_end = rate_at + src[rate_at..].find(['\n', ' ']).unwrap();
        let Ok(netqos::units::RateSpec::Bits(bits)) =
            netqos::units::parse_rate(&src[rate_at..value_end])
        else {
            continue;
        };
        let edited = format!(
            "{}{}kbit{}",
            &src[..rate_at],
            if up {
                bits + bits / 10
            } else {
                bits - bits / 10
            } / 1000,
            &src[value_end..]
        );
        if netqos::check_source(&edited, &ExternalVars::default())
            .model
            .is_some()
        {
            return Some((edited, name.to_string()));
        }
    }
    None
}

#[test]
fn one_edited_rate_is_one_change_in_words() {
    let d = TempDir::new("diff-raise");
    for path in policies(&root().join("examples")) {
        let src = std::fs::read_to_string(&path).unwrap();
        // A policy whose classes fill their parents exactly can only be lowered.
        let (edited, class) = edit_one_class_rate(&src, true)
            .or_else(|| {
                assert!(
                    !path.ends_with("pods.nq"),
                    "pods.nq has room to raise a class"
                );
                edit_one_class_rate(&src, false)
            })
            .expect("a class rate can be edited");
        let new = d.write("new.nq", &edited);
        let text = cli(["diff"]).arg(&path).arg(&new).code(1).stdout();
        let policy: Vec<&str> = text
            .split("on the node:\n")
            .next()
            .unwrap()
            .lines()
            .collect();
        assert_eq!(
            policy.len(),
            2,
            "{}: one scope, one change:\n{text}",
            path.display()
        );
        assert!(
            policy[0].ends_with(&format!(" class {class}:")),
            "{}: {text}",
            path.display()
        );
        assert!(
            policy[1].starts_with("  guaranteed rate ") && policy[1].contains(" → "),
            "{}: {text}",
            path.display()
        );
        // The ids that change on the node: the class, changed in place.
        assert!(
            text.contains(&format!("({class}) changed in place: rate ")),
            "{text}"
        );
    }
}

#[test]
fn equal_and_reformatted_policies_print_nothing() {
    let d = TempDir::new("diff-equal");
    for path in policies(&root().join("examples")) {
        let p = path.to_str().unwrap();
        let same = cli(["diff", p, p]).code(0);
        assert!(same.output.stdout.is_empty() && same.output.stderr.is_empty());
        // Comments gone, one-line class bodies: the same policy.
        let src = std::fs::read_to_string(&path).unwrap();
        let stripped: String = src
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim_end())
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        let other = d.write("stripped.nq", &stripped);
        let out = cli(["diff", p, other.to_str().unwrap()]).code(0);
        assert!(out.output.stdout.is_empty());
        assert!(diff(&model(&src), &model(&stripped)).is_empty());
    }
}

#[test]
fn review_sized_edit_in_every_format() {
    let args = ["examples/pods.nq", "tests/fixtures/diff/pods-edited.nq"];
    for format in ["human", "json", "github"] {
        let out = cli(["diff", "--format", format, args[0], args[1]]).code(1);
        let text = String::from_utf8(out.output.stdout).unwrap();
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v["equal"], false);
        }
        insta_settings().bind(|| {
            insta::assert_snapshot!(format!("diff__pods_edited__{format}"), text);
        });
    }
}

#[test]
fn removed_classes_say_where_their_traffic_goes() {
    let old = model(
        "netqos 1\ninterface eth0 {\n    rate 1gbit\n    class cp {\n        rate 200mbit\n        prio 0\n        match tcp dport 6443, 2379-2380, 10250, 9345, 22, 53\n        match udp dport 8472, 53\n    }\n    class batch {\n        rate 100mbit\n        match src 10.42.3.0/24\n    }\n    class backup {\n        rate 100mbit\n        match tcp dport 873\n    }\n    class bulk {\n        rate 600mbit\n        default\n    }\n}\n",
    );
    let new = model(
        "netqos 1\ninterface eth0 {\n    rate 1gbit\n    class cp {\n        rate 200mbit\n        prio 0\n        match tcp dport 6443, 2379-2380, 10250, 9345, 22, 53\n        match udp dport 8472, 53\n    }\n    class sync {\n        rate 100mbit\n        match tcp dport 800-900\n    }\n    class bulk {\n        rate 700mbit\n        default\n    }\n}\n",
    );
    let d = diff(&old, &new);
    let texts: Vec<String> = d
        .changes
        .iter()
        .map(|c| format!("{}: {}", c.scope, c.text))
        .collect();
    assert!(
        texts.contains(
            &"eth0 egress class batch: class removed; its traffic now goes to bulk".to_string()
        ),
        "{texts:#?}"
    );
    assert!(
        texts.contains(
            &"eth0 egress class backup: class removed; its traffic now goes to sync".to_string()
        ),
        "{texts:#?}"
    );
    assert!(d.node.iter().any(|n| n.text.contains("(batch) deleted")));
}

#[test]
fn pods_block_changes_name_cni_and_annotations() {
    let base = "netqos 1\ninterface eth0 {\n    rate 1gbit\n    class cp {\n        rate 200mbit\n        prio 0\n        match tcp dport 6443, 2379-2380, 10250, 9345, 22, 53\n        match udp dport 8472, 53\n    }\n    class bulk {\n        rate 800mbit\n        default\n    }\n}\n";
    let old = model(&format!(
        "{base}pods {{\n    cni flannel\n    limit app=backup egress 50mbit\n}}\n"
    ));
    let new = model(&format!(
        "{base}pods {{\n    cni rke2-flannel\n    limit app=backup egress 80mbit\n}}\n"
    ));
    let d = diff(&old, &new);
    let texts: Vec<&str> = d.changes.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "cni flannel → rke2-flannel (same conflist /etc/cni/net.d/10-flannel.conflist)",
            "pod limit app=backup egress 50 → 80 Mbit/s (kubernetes.io/egress-bandwidth: 50M → 80M)"
        ]
    );
    // Pod limits do not touch the node's tc state.
    assert!(d.node.is_empty());
}

#[test]
fn exit_statuses() {
    let d = TempDir::new("diff-exit");
    d.write(
        "bad.nq",
        "netqos 1\ninterface eth0 {\n    rate 100mbps\n}\n",
    );
    let ex = root().join("examples/pods.nq");
    let ex = ex.to_str().unwrap();
    cli(["diff", ex, "bad.nq"])
        .cwd(&d)
        .code(2)
        .stderr_has("NQ006");
    cli(["diff", ex, "missing.nq"]).cwd(&d).code(3);
    cli(["diff", ex]).cwd(&d).code(2);
    let other = root().join("examples/ingress.nq");
    let verbose = cli(["diff", "-v", ex, ex]).cwd(&d).code(0);
    assert!(verbose.output.stdout.is_empty());
    assert!(verbose.stderr().ends_with(": equal\n"));
    let quiet = cli(["diff", "-q", ex, other.to_str().unwrap()])
        .cwd(&d)
        .code(1);
    assert!(quiet.output.stdout.is_empty());
}
