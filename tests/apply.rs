//! The live-apply planner and transactions without a kernel: the diff against an in-memory
//! kernel (`apply::fake`) that enforces the kernel's ordering rules. Make-before-break
//! order, in-place class changes, filters re-created when their keys change, zero changes
//! on a second run, refusals instead of teardown, and undo back to the snapshot after a
//! failure at every step.

use netqos::apply::diff::{Options, diff};
use netqos::apply::fake::FakeKernel;
use netqos::apply::kernel::Kernel;
use netqos::apply::model::*;
use netqos::apply::state::{self, Target};
use netqos::apply::txn::{self, Hooks, Record, StateDir};
use netqos::vars::ExternalVars;

use crate::support::*;

fn target(src: &str) -> Target {
    let model = netqos::check_source(src, &ExternalVars::default())
        .model
        .expect("valid policy");
    state::from_plan(&netqos::lower::lower(&model)).expect("target")
}

const EGRESS: &str = "netqos 1
interface eth0 {
    rate 1gbit
    class cp { rate 200mbit ceil 1gbit prio 0 match dst 10.0.0.10 match tcp dport 6443 }
    class pods {
        rate 600mbit
        match udp dport 8472
        class batch { rate 100mbit ceil 300mbit match src 10.42.3.0/24 }
        class web { rate 400mbit default }
    }
    class bulk { rate 100mbit default }
}
";

const INGRESS: &str = "netqos 1
interface eth0 ingress {
    rate 1gbit
    class cp { rate 300mbit prio 0 match src 10.0.0.10 }
    class rest { rate 700mbit default }
}
";

/// Applies `t` to the fake kernel; returns the changes sent.
fn apply(k: &mut FakeKernel, t: &Target) -> Vec<Change> {
    let live = k.read(&t.devices()).unwrap();
    let changes = diff(&live, t, Options::default()).expect("diff");
    for c in &changes {
        k.send(c).unwrap_or_else(|e| panic!("{e}"));
    }
    changes
}

fn rank(c: &Change) -> usize {
    match c {
        Change::AddLink { .. } | Change::SetLinkUp { .. } => 0,
        Change::AddQdisc { q } if q.parent == H_ROOT => 1,
        Change::AddClass { .. } | Change::ChangeClass { .. } => 2,
        Change::AddQdisc { q } | Change::ChangeQdisc { new: q, .. } if q.parent != H_INGRESS => 3,
        Change::AddFilter { f } | Change::ReplaceFilter { new: f, .. }
            if f.parent < H_INGRESS_QDISC =>
        {
            4
        }
        Change::AddQdisc { .. } | Change::AddFilter { .. } | Change::ReplaceFilter { .. } => 5,
        Change::DelFilter { .. } => 6,
        Change::DelQdisc { q } if q.parent != H_ROOT && q.parent != H_INGRESS => 7,
        Change::DelClass { .. } => 8,
        _ => 9,
    }
}

#[test]
fn fresh_apply_is_ordered_make_before_break_and_idempotent() {
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let changes = apply(&mut k, &t);
    let ranks: Vec<usize> = changes.iter().map(rank).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    // Parents before children.
    let mut seen = vec![0x1_0000u32];
    for c in &changes {
        if let Change::AddClass { c } = c {
            assert!(
                seen.contains(&c.parent),
                "{} before its parent",
                c.describe()
            );
            seen.push(c.classid);
        }
    }
    assert!(apply(&mut k, &t).is_empty(), "second apply sends nothing");
}

#[test]
fn one_rate_change_changes_one_class_in_place() {
    let mut k = FakeKernel::with_devices(&["eth0"]);
    apply(&mut k, &target(EGRESS));
    let edited = EGRESS.replace("rate 100mbit ceil 300mbit", "rate 150mbit ceil 300mbit");
    let changes = apply(&mut k, &target(&edited));
    assert_eq!(changes.len(), 2, "{changes:#?}"); // the class, and its leaf queue's limit
    assert!(
        matches!(&changes[0], Change::ChangeClass { old, new } if old.rate == 12_500_000 && new.rate == 18_750_000)
    );
    assert!(matches!(&changes[1], Change::ChangeQdisc { .. }));
}

#[test]
fn a_filter_whose_keys_change_is_added_anew_and_the_old_one_deleted() {
    let mut k = FakeKernel::with_devices(&["eth0"]);
    apply(&mut k, &target(EGRESS));
    let edited = EGRESS.replace("10.42.3.0/24", "10.42.4.0/24");
    let changes = apply(&mut k, &target(&edited));
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let (Change::DelFilter { f: old }, Change::AddFilter { f: new }) = (&changes[0], &changes[1])
    else {
        panic!("{changes:#?}");
    };
    assert_eq!(
        (old.parent, old.prio, old.node()),
        (new.parent, new.prio, new.node())
    );
    assert_ne!(old.keys, new.keys);
}

#[test]
fn a_filter_whose_target_changes_is_re_pointed_in_place() {
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let t = target(EGRESS);
    apply(&mut k, &t);
    let mut t2 = t.clone();
    let f = &mut t2.trees[0].filters[0];
    f.action = Action::Flow { classid: 0x1_0001 };
    let changes = apply(&mut k, &t2);
    assert_eq!(changes.len(), 1);
    assert!(matches!(changes[0], Change::ReplaceFilter { .. }));
}

#[test]
fn removals_go_filters_then_queues_then_children_then_parents() {
    let mut k = FakeKernel::with_devices(&["eth0"]);
    apply(&mut k, &target(EGRESS));
    let smaller = "netqos 1
interface eth0 {
    rate 1gbit
    class cp { rate 200mbit ceil 1gbit prio 0 match dst 10.0.0.10 match tcp dport 6443 }
    class bulk { rate 100mbit default }
}
";
    // The fake kernel refuses a class delete while children or filters use it.
    let changes = apply(&mut k, &target(smaller));
    let dels: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c, Change::DelClass { .. }))
        .collect();
    assert_eq!(dels.len(), 3, "pods, batch, web: {changes:#?}");
    assert!(apply(&mut k, &target(smaller)).is_empty());
}

#[test]
fn what_htb_cannot_change_in_place_is_refused_with_a_reason() {
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let t = target(EGRESS);
    apply(&mut k, &t);
    let mut t2 = t.clone();
    if let Some(QdiscKind::Htb { default, .. }) = t2.trees[0].root.as_mut().map(|r| &mut r.kind) {
        *default = 0x99;
    }
    let live = k.read(&t2.devices()).unwrap();
    let e = diff(&live, &t2, Options::default()).unwrap_err();
    assert!(e.contains("cannot change its default"), "{e}");
    let mut t3 = t.clone();
    t3.trees[0].classes[2].parent = 0x1_0000;
    let e = diff(&live, &t3, Options::default()).unwrap_err();
    assert!(e.contains("cannot move a class"), "{e}");
}

#[test]
fn a_foreign_root_is_refused_unless_allowed() {
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let tbf = Qdisc {
        dev: "eth0".into(),
        parent: H_ROOT,
        handle: 0x5_0000,
        kind: QdiscKind::Tbf {
            rate: 1_000_000,
            peakrate: 0,
            limit: 10_000,
            buffer: 100,
            mtu: 0,
            burst: Some(5000),
            pburst: None,
        },
    };
    k.send(&Change::ReplaceQdisc {
        old: tbf.clone(),
        new: tbf.clone(),
    })
    .unwrap();
    let t = target(EGRESS);
    let live = k.read(&t.devices()).unwrap();
    let e = diff(&live, &t, Options::default()).unwrap_err();
    assert!(e.contains("--replace-foreign"), "{e}");
    let c = diff(
        &live,
        &t,
        Options {
            replace_foreign: true,
        },
    )
    .unwrap();
    assert!(matches!(&c[0], Change::ReplaceQdisc { old, .. } if *old == tbf));
}

#[test]
fn ingress_creates_the_ifb_first_and_the_redirect_last_and_uses_an_existing_clsact() {
    let t = target(INGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let changes = apply(&mut k, &t);
    assert!(matches!(&changes[0], Change::AddLink { link } if link.name == "ifb-eth0"));
    assert!(matches!(&changes[1], Change::SetLinkUp { up: true, .. }));
    assert!(
        matches!(changes.last(), Some(Change::AddFilter { f }) if f.parent == H_CLSACT_INGRESS
        && matches!(&f.action, Action::Redirect { to } if to == "ifb-eth0"))
    );
    assert!(apply(&mut k, &t).is_empty());

    let mut k = FakeKernel::with_devices(&["eth0"]);
    k.send(&Change::AddQdisc {
        q: Qdisc {
            dev: "eth0".into(),
            parent: H_INGRESS,
            handle: H_INGRESS_QDISC,
            kind: QdiscKind::Clsact,
        },
    })
    .unwrap();
    let changes = apply(&mut k, &t);
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::AddQdisc { q } if q.parent == H_INGRESS))
    );
    assert!(
        matches!(changes.last(), Some(Change::AddFilter { f }) if f.parent == H_CLSACT_INGRESS)
    );
}

static ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Applies `to` over `from` with a failure at step `fail`, undoes, and checks the fake
/// kernel equals the snapshot.
fn fail_and_undo(from: Option<&str>, to: &str, dir: &StateDir) -> usize {
    let base = || {
        let mut k = FakeKernel::with_devices(&["eth0"]);
        if let Some(f) = from {
            apply(&mut k, &target(f));
        }
        k
    };
    let t = target(to);
    let n = {
        let mut k = base();
        let live = k.read(&t.devices()).unwrap();
        diff(&live, &t, Options::default()).unwrap().len()
    };
    for fail in 0..n {
        let mut k = base();
        let before = k.read(&t.devices()).unwrap();
        let changes = diff(&before, &t, Options::default()).unwrap();
        let record = Record {
            conflist: None,
            id: format!(
                "t{}-{fail}",
                ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            created: 0,
            source: "test".into(),
            target: t.clone(),
            snapshot: before.clone(),
            outcome: "applying".into(),
        };
        let mut j = dir.journal(&record.id).unwrap();
        let hooks = Hooks {
            fail_after: Some(fail),
            pause_after: None,
        };
        let (at, _) = txn::execute(&mut k, &changes, &mut j, hooks).unwrap_err();
        assert_eq!(at, fail);
        txn::restore(&mut k, &record, &dir.inverses(&record.id)).unwrap();
        assert_eq!(
            k.read(&t.devices()).unwrap(),
            before,
            "after failing at step {fail}"
        );
    }
    n
}

#[test]
fn a_failure_at_any_step_is_undone_to_the_snapshot() {
    let tmp = TempDir::new("apply-undo");
    let d = StateDir::open(&tmp.join("state")).unwrap();
    assert!(fail_and_undo(None, EGRESS, &d) > 10);
    let edited = EGRESS
        .replace("rate 100mbit ceil 300mbit", "rate 150mbit ceil 300mbit")
        .replace("10.42.3.0/24", "10.42.4.0/24")
        .replace(
            "class bulk { rate 100mbit default }",
            "class bulk { rate 90mbit default }\n    class new { rate 10mbit match dst 10.9.9.9 }",
        );
    assert!(fail_and_undo(Some(EGRESS), &edited, &d) >= 5);
    assert!(fail_and_undo(None, INGRESS, &d) > 5);
    assert!(
        fail_and_undo(
            Some(EGRESS),
            "netqos 1\ninterface eth0 {\n rate 1gbit\n class cp { rate 100mbit match dst 10.0.0.10 match tcp dport 6443 }\n class bulk { rate 1mbit default }\n}\n",
            &d
        ) > 3
    );
}

#[test]
fn the_lock_admits_one_writer() {
    let tmp = TempDir::new("apply-lock");
    let d = StateDir::open(&tmp.join("state")).unwrap();
    let held = d.lock(false).unwrap();
    let e = d.lock(false).unwrap_err();
    assert!(e.0.contains("holds"), "{e}");
    assert!(
        e.0.contains(&format!("(process {})", std::process::id())),
        "{e}"
    );
    drop(held);
    d.lock(false).unwrap();
}

#[test]
fn dropping_an_ingress_block_removes_its_redirect_and_ifb_but_keeps_the_hook_qdisc() {
    let both = format!("{EGRESS}{}", INGRESS.trim_start_matches("netqos 1\n"));
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let first = target(&both);
    apply(&mut k, &first);
    assert!(k.live.link("ifb-eth0").is_some());
    let second = state::with_removals(target(EGRESS), &first);
    let changes = apply(&mut k, &second);
    assert!(matches!(&changes[0], Change::DelFilter { f } if f.prio == state::REDIRECT_PRIO));
    assert!(matches!(changes.last(), Some(Change::DelLink { link }) if link.name == "ifb-eth0"));
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert!(k.live.link("ifb-eth0").is_none());
    assert!(k.live.dev("eth0").unwrap().hook.is_some());
    assert!(apply(&mut k, &second).is_empty());
}

#[test]
fn live_commands_explain_what_they_cannot_do() {
    let dir = TempDir::new("apply-cli");
    let policy = dir.write(
        "p.nq",
        EGRESS.replace(
            "class bulk { rate 100mbit default }",
            "class bulk { rate 100mbit default qdisc fq_codel }",
        ),
    );
    let state = dir.join("state");
    let s = state.to_str().unwrap();
    let out = cli(["plan"]).arg(&policy).cwd(&dir).code(3).text();
    assert!(
        out.contains("fq_codel") && out.contains("not supported by the netlink apply"),
        "{out}"
    );
    cli(["apply", "--confirm", "0s", "--state-dir", s, "x.nq"])
        .cwd(&dir)
        .code(2);
    cli(["rollback", "--state-dir", s])
        .cwd(&dir)
        .code(3)
        .text_has("nothing to roll back");
    cli(["confirm", "--state-dir", s])
        .cwd(&dir)
        .code(3)
        .text_has("no apply awaits confirmation");
}

/// Many windows, the kernel refusing a change in the middle of one: the changes before it
/// are sent, the rest of that window is not (the in-memory kernel stops there), no later
/// window goes out (the second stage sends a window only after the previous one was
/// answered without failure), and the undo returns to the snapshot.
#[test]
fn a_kernel_refusal_mid_window_sends_nothing_after_it() {
    let mut src = String::from("netqos 1\ninterface eth0 {\n rate 10gbit\n");
    for i in 0..300 {
        src.push_str(&format!(
            " class c{i} {{ rate 1mbit match dst 10.1.{}.{} }}\n",
            i / 200,
            i % 200 + 1
        ));
    }
    src.push_str(" class bulk { rate 1mbit default }\n}\n");
    let t = target(&src);
    let tmp = TempDir::new("apply-midwindow");
    let d = StateDir::open(&tmp.join("state")).unwrap();
    for fail in [1, 127, 200, 600] {
        let mut k = FakeKernel::with_devices(&["eth0"]);
        let before = k.read(&t.devices()).unwrap();
        let changes = diff(&before, &t, Options::default()).unwrap();
        assert!(changes.len() > 800, "{}", changes.len());
        k.fail_at = Some(fail);
        let record = Record {
            conflist: None,
            id: format!("mid-{fail}"),
            created: 0,
            source: "test".into(),
            target: t.clone(),
            snapshot: before.clone(),
            outcome: "applying".into(),
        };
        let mut j = d.journal(&record.id).unwrap();
        let (at, e) = txn::execute(&mut k, &changes, &mut j, Hooks::default()).unwrap_err();
        assert_eq!(at, fail, "{e}");
        assert_eq!(k.sent, changes[..fail], "nothing after the refused change");
        k.fail_at = None;
        txn::restore(&mut k, &record, &d.inverses(&record.id)).unwrap();
        assert_eq!(k.read(&t.devices()).unwrap(), before, "undo after {fail}");
    }
}
