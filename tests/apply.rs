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
use netqos::apply::state_dir::StateDir;
use netqos::apply::transaction::{self, Outcome, Transaction};
use netqos::apply::txn::Hooks;
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
    assert!(e.to_string().contains("cannot change its default"), "{e}");
    let mut t3 = t.clone();
    t3.trees[0].classes[2].parent = 0x1_0000;
    let e = diff(&live, &t3, Options::default()).unwrap_err();
    assert!(e.to_string().contains("cannot move a class"), "{e}");
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
    assert!(e.to_string().contains("--replace-foreign"), "{e}");
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

/// Runs the apply transaction to `t` against `k` with `hooks`.
fn transact(k: &mut FakeKernel, dir: &StateDir, t: &Target, hooks: Hooks) -> Outcome {
    let options = transaction::Options {
        source: "test".into(),
        hooks,
        ..Default::default()
    };
    Transaction::new(k, dir, options)
        .apply(t.clone())
        .unwrap_or_else(|e| panic!("{e}"))
}

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
        let hooks = Hooks {
            fail_after: Some(fail),
            ..Hooks::default()
        };
        let Outcome::RolledBack(f) = transact(&mut k, dir, &t, hooks) else {
            panic!("step {fail}: not rolled back");
        };
        assert_eq!(f.at, fail);
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
    assert!(e.to_string().contains("holds"), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("(process {})", std::process::id())),
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
        let Outcome::RolledBack(f) = transact(&mut k, &d, &t, Hooks::default()) else {
            panic!("not rolled back");
        };
        assert_eq!(f.at, fail, "{}", f.error);
        // The changes before the refused one went out; after it only the undo (every
        // change here adds, every undo step deletes).
        assert_eq!(k.sent[..fail], changes[..fail]);
        assert!(
            k.sent[fail..].iter().all(|c| !changes.contains(c)),
            "nothing after the refused change"
        );
        assert_eq!(k.read(&t.devices()).unwrap(), before, "undo after {fail}");
    }
}

/// Lines the transaction gave the operator.
#[derive(Default)]
struct Lines(Vec<String>);

impl transaction::Observer for Lines {
    fn note(&mut self, line: &str) {
        self.0.push(line.to_string());
    }
    fn warn(&mut self, line: &str) {
        self.0.push(line.to_string());
    }
}

/// A state directory for one test (and room beside it), removed on drop.
struct Dir(TempDir, StateDir);

impl Dir {
    fn new(tag: &str) -> Dir {
        let t = TempDir::new(&format!("apply-{tag}"));
        let d = StateDir::open(&t.join("state")).unwrap();
        Dir(t, d)
    }
}

fn options() -> transaction::Options<'static> {
    transaction::Options {
        source: "test".into(),
        ..Default::default()
    }
}

/// A kernel that acknowledges a change without making it: the read-back finds the
/// difference, the apply fails after all changes and is undone.
#[test]
fn a_verify_mismatch_fails_the_apply_and_undoes_it() {
    let d = Dir::new("verify");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let before = k.read(&t.devices()).unwrap();
    // The last change: nothing later depends on it.
    k.ignore_at = Some(diff(&before, &t, Options::default()).unwrap().len() - 1);
    let Outcome::RolledBack(f) = transact(&mut k, &d.1, &t, Hooks::default()) else {
        panic!("not rolled back");
    };
    assert_eq!(f.at, f.total, "after all changes");
    assert!(matches!(
        f.error,
        transaction::FailError::Verify { count: 1, .. }
    ));
    assert!(
        f.error.to_string().contains("does not hold what was sent"),
        "{}",
        f.error
    );
    assert_eq!(k.read(&t.devices()).unwrap(), before);
    let rec = d.1.record(&f.id).unwrap().unwrap();
    assert_eq!(rec.outcome, "failed, rolled back");
    assert!(
        d.1.last().unwrap().is_none(),
        "a failed apply is no undo point"
    );
    assert!(
        d.1.applied().unwrap().is_none(),
        "nothing recorded as applied"
    );
}

/// The conflist changed between the check and the install: the install refuses, the
/// kernel is undone, the file keeps what the other writer put there.
#[test]
fn a_conflist_refusal_undoes_the_apply_and_leaves_the_file() {
    use netqos::apply::conflist_file::ConflistFile;
    let d = Dir::new("conflist");
    let conf = d.0.join("10-flannel.conflist");
    std::fs::write(&conf, "{\"changed\": true}").unwrap();
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let before = k.read(&t.devices()).unwrap();
    let res = ConflistFile {
        path: conf.clone(),
        original: "{\"plugins\": []}".into(),
        patched: "{\"plugins\": [{\"type\": \"bandwidth\"}]}".into(),
    };
    let out = Transaction::new(&mut k, &d.1, options())
        .resource(res)
        .apply(t.clone())
        .unwrap();
    let Outcome::RolledBack(f) = out else {
        panic!("not rolled back: {out:?}");
    };
    assert!(
        f.error.to_string().contains("changed while applying"),
        "{}",
        f.error
    );
    assert_eq!(k.read(&t.devices()).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "{\"changed\": true}"
    );
}

/// A probe that cannot connect undoes the tree and the conflist installed before it; a
/// probe that connects keeps the apply and says so.
#[test]
fn a_failed_probe_undoes_the_tree_and_the_conflist() {
    use netqos::apply::conflist_file::ConflistFile;
    use netqos::apply::probe::{ProbeCheck, parse};
    let d = Dir::new("probe");
    let conf = d.0.join("10-flannel.conflist");
    let original = "{\"plugins\": []}";
    std::fs::write(&conf, original).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let probe = |port: u16| ProbeCheck {
        probe: parse(&format!("tcp:127.0.0.1:{port}")).unwrap(),
        timeout: std::time::Duration::from_secs(2),
    };
    let res = ConflistFile {
        path: conf.clone(),
        original: original.into(),
        patched: "{\"plugins\": [{\"type\": \"bandwidth\"}]}".into(),
    };
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let before = k.read(&t.devices()).unwrap();
    let out = Transaction::new(&mut k, &d.1, options())
        .resource(res.clone())
        .resource(probe(open))
        .resource(probe(closed))
        .apply(t.clone())
        .unwrap();
    let Outcome::RolledBack(f) = out else {
        panic!("not rolled back: {out:?}");
    };
    let text = f.error.to_string();
    assert!(
        text.contains(&format!("probe tcp:127.0.0.1:{closed}")) && text.contains("refused"),
        "{text}"
    );
    assert_eq!(k.read(&t.devices()).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), original);
    let mut lines = Lines::default();
    let out = Transaction::new(&mut k, &d.1, options())
        .resource(res)
        .resource(probe(open))
        .observer(&mut lines)
        .apply(t.clone())
        .unwrap();
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    assert!(
        lines.0.iter().any(|l| l.starts_with("conflist: patched"))
            && lines.0.iter().any(|l| l.contains("connected in")),
        "{:?}",
        lines.0
    );
    drop(listener);
}

/// A kernel that refuses everything from the failing change on: the undo cannot finish,
/// exit 5, and the record says so.
#[test]
fn an_undo_that_fails_is_reported_as_such() {
    let d = Dir::new("undofail");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    k.fail_from = Some(4);
    let out = transact(&mut k, &d.1, &t, Hooks::default());
    let Outcome::RollbackFailed(f, e) = &out else {
        panic!("{out:?}");
    };
    assert_eq!(f.at, 4);
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert_eq!(out.exit(), netqos::exit::Exit::RollbackFailed);
    assert_eq!(
        d.1.record(&f.id).unwrap().unwrap().outcome,
        "failed, rollback failed"
    );
}

/// Refusals before any change: a pending confirmation, a missing device, a foreign root,
/// a reverter that cannot start (the pending mark is removed again). Nothing is sent.
#[test]
fn refusals_before_any_change_send_nothing() {
    use netqos::apply::state_dir::Pending;
    use netqos::apply::transaction::{ApplyError, Confirm, Reverter};
    struct Broken;
    impl Reverter for Broken {
        fn start(&self, _: &StateDir, _: &Pending) -> std::io::Result<()> {
            Err(std::io::Error::other("no timer here"))
        }
    }
    let d = Dir::new("refusals");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth1"]);
    let e = Transaction::new(&mut k, &d.1, options())
        .apply(t.clone())
        .unwrap_err();
    assert!(matches!(&e, ApplyError::NoDevice(n) if n == "eth0"), "{e}");
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let o = transaction::Options {
        confirm: Some(Confirm {
            window: std::time::Duration::from_secs(60),
            reverter: &Broken,
        }),
        ..options()
    };
    let e = Transaction::new(&mut k, &d.1, o)
        .apply(t.clone())
        .unwrap_err();
    assert!(matches!(e, ApplyError::Reverter(_)), "{e}");
    assert!(d.1.pending().unwrap().is_none());
    assert!(k.sent.is_empty());
    d.1.set_pending(Some(&Pending {
        id: "x".into(),
        deadline: netqos::apply::state_dir::now() + 3600,
    }))
    .unwrap();
    let e = Transaction::new(&mut k, &d.1, options())
        .apply(t.clone())
        .unwrap_err();
    assert!(e.to_string().contains("awaits confirmation"), "{e}");
    assert_eq!(e.exit(), netqos::exit::Exit::Io);
    assert!(k.sent.is_empty());
}

/// The default-route hint comes without a safety net and not with a probe or a confirm
/// window; applied, then rolled back through the library, the kernel is as before.
#[test]
fn default_route_hint_and_rollback_through_the_library() {
    use netqos::apply::probe::{ProbeCheck, parse};
    let d = Dir::new("defroute");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    k.default_routes = vec!["eth0".into()];
    let pristine = k.read(&t.devices()).unwrap();
    let mut lines = Lines::default();
    let out = Transaction::new(&mut k, &d.1, options())
        .observer(&mut lines)
        .apply(t.clone())
        .unwrap();
    assert!(matches!(out, Outcome::Applied(_)));
    assert!(
        lines
            .0
            .iter()
            .any(|l| l.contains("eth0 carries the default route")),
        "{:?}",
        lines.0
    );
    let mut lines = Lines::default();
    let guard = ProbeCheck {
        probe: parse("tcp:127.0.0.1:9").unwrap(),
        timeout: std::time::Duration::from_millis(1),
    };
    let mut k2 = FakeKernel::with_devices(&["eth0"]);
    k2.default_routes = vec!["eth0".into()];
    let d2 = Dir::new("defroute2");
    let _ = Transaction::new(&mut k2, &d2.1, options())
        .resource(guard)
        .observer(&mut lines)
        .apply(t.clone());
    assert!(
        !lines.0.iter().any(|l| l.contains("default route")),
        "{:?}",
        lines.0
    );
    let mut rec = d.1.last().unwrap().unwrap();
    assert_eq!(rec.outcome, "applied");
    let done = transaction::rollback(
        &mut k,
        &d.1,
        &mut rec,
        "rolled back",
        &mut transaction::Silent,
    )
    .unwrap();
    assert!(done.changes > 0 && done.unrecorded.is_none());
    assert_eq!(k.read(&t.devices()).unwrap(), pristine);
    assert!(d.1.applied().unwrap().is_none());
}

/// Issue 18.7: a failed apply never replaces the undo point. A applied, B fails and is
/// undone: rollback still returns to before A.
#[test]
fn a_failed_apply_leaves_the_previous_undo_point() {
    let d = Dir::new("undopoint");
    let a = target(EGRESS);
    let b = target(&EGRESS.replace("rate 100mbit ceil 300mbit", "rate 150mbit ceil 300mbit"));
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let pristine = k.read(&a.devices()).unwrap();
    let Outcome::Applied(first) = transact(&mut k, &d.1, &a, Hooks::default()) else {
        panic!("A not applied");
    };
    let hooks = Hooks {
        fail_after: Some(1),
        ..Hooks::default()
    };
    assert!(matches!(
        transact(&mut k, &d.1, &b, hooks),
        Outcome::RolledBack(_)
    ));
    let mut last = d.1.last().unwrap().unwrap();
    assert_eq!(last.id, first.id, "the undo point is still A");
    transaction::rollback(
        &mut k,
        &d.1,
        &mut last,
        "rolled back",
        &mut transaction::Silent,
    )
    .unwrap();
    assert_eq!(k.read(&a.devices()).unwrap(), pristine);
}

/// Issue 18.1: a transaction that never recorded its end (here: its undo failed) is undone
/// to its own snapshot by the next apply before anything else, so that apply's snapshot
/// is the state before it, never a half-built tree.
#[test]
fn an_unfinished_transaction_is_undone_before_the_next_apply() {
    let d = Dir::new("unfinished");
    let a = target(EGRESS);
    let b = target(&EGRESS.replace("10.42.3.0/24", "10.42.4.0/24"));
    let mut k = FakeKernel::with_devices(&["eth0"]);
    transact(&mut k, &d.1, &a, Hooks::default());
    let after_a = k.read(&a.devices()).unwrap();
    let mut broken = k.clone();
    broken.fail_from = Some(broken.sent.len() + 1);
    assert!(matches!(
        transact(&mut broken, &d.1, &b, Hooks::default()),
        Outcome::RollbackFailed(..)
    ));
    let half = broken.read(&a.devices()).unwrap();
    assert_ne!(half, after_a, "half-built");
    let interrupted = d.1.interrupted().unwrap().expect("named as interrupted");
    broken.fail_from = None;
    let mut lines = Lines::default();
    let out = Transaction::new(&mut broken, &d.1, options())
        .observer(&mut lines)
        .apply(b.clone())
        .unwrap();
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    assert!(
        lines
            .0
            .iter()
            .any(|l| l.contains(&interrupted.id) && l.contains("interrupted")),
        "{:?}",
        lines.0
    );
    assert!(d.1.interrupted().unwrap().is_none());
    let mut last = d.1.last().unwrap().unwrap();
    assert_eq!(
        last.snapshot, after_a,
        "the snapshot is A, not the half-built tree"
    );
    transaction::rollback(
        &mut broken,
        &d.1,
        &mut last,
        "rolled back",
        &mut transaction::Silent,
    )
    .unwrap();
    assert_eq!(broken.read(&a.devices()).unwrap(), after_a);
}

/// Issue 18.4: when the outcome cannot be recorded the apply says so (the CLI exits 3).
#[test]
fn an_unrecorded_outcome_is_reported() {
    let d = Dir::new("unrecorded");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let hooks = Hooks {
        fail_record: true,
        ..Hooks::default()
    };
    let Outcome::Applied(a) = transact(&mut k, &d.1, &t, hooks) else {
        panic!("not applied");
    };
    assert!(a.unrecorded.is_some());
}

/// Starts a second apply (its own state directory, the same device) while the first holds
/// its device locks, and keeps the error it got.
struct Intruder {
    k: FakeKernel,
    dir: Dir,
    t: Target,
    refused: Option<String>,
}

impl transaction::Observer for Intruder {
    fn phase(&mut self, name: &'static str) {
        if name == "read" && self.refused.is_none() {
            let e = Transaction::new(&mut self.k, &self.dir.1, options())
                .apply(self.t.clone())
                .err();
            self.refused = Some(e.map_or("not refused".into(), |e| e.to_string()));
        }
    }
}

/// Issue 18.2: one lock per device, whatever the state directory: a second apply on the
/// same device (same namespace and ifindex) is refused while the first runs.
#[test]
fn a_second_apply_on_the_same_device_is_refused_whatever_its_state_dir() {
    let locks = TempDir::new("apply-devlocks");
    let d = Dir::new("devlock1");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    k.lock_dir = Some(locks.join("dev"));
    k.netns = 4242;
    let mut intruder = Intruder {
        k: k.clone(),
        dir: Dir::new("devlock2"),
        t: t.clone(),
        refused: None,
    };
    let out = Transaction::new(&mut k, &d.1, options())
        .observer(&mut intruder)
        .apply(t.clone())
        .unwrap();
    assert!(matches!(out, Outcome::Applied(_)));
    let refused = intruder.refused.unwrap();
    assert!(
        refused.contains("device eth0 is being changed by another netqos"),
        "{refused}"
    );
    assert!(intruder.k.sent.is_empty(), "the second sent nothing");
    // Once the first is done, the device is free again.
    let out = Transaction::new(&mut intruder.k, &intruder.dir.1, options())
        .apply(t)
        .unwrap();
    assert!(matches!(out, Outcome::Applied(_)));
}

/// Issue 18.3: a device renamed mid-apply (its ifindex stays) fails verification as what
/// it is, and the undo, which could not reach the same device by its name, says so: exit 5.
#[test]
fn a_device_renamed_mid_apply_is_reported_as_renamed() {
    let locks = TempDir::new("apply-rename");
    let d = Dir::new("rename");
    let t = target(EGRESS);
    let mut k = FakeKernel::with_devices(&["eth0"]);
    k.lock_dir = Some(locks.join("dev"));
    k.netns = 4343;
    k.rename_at = Some((3, "eth0".into(), "eth9".into()));
    let out = transact(&mut k, &d.1, &t, Hooks::default());
    let Outcome::RollbackFailed(f, e) = &out else {
        panic!("{out:?}");
    };
    assert!(
        matches!(&f.error, transaction::FailError::DeviceChanged { name, .. } if name == "eth0"),
        "{}",
        f.error
    );
    assert!(e.to_string().contains("renamed or replaced"), "{e}");
    assert_eq!(out.exit(), netqos::exit::Exit::RollbackFailed);
    assert!(
        k.live.dev("eth9").is_some_and(|d| !d.classes.is_empty()),
        "the changes went to the renamed device"
    );
}

/// Issue 18.5: the live commands refuse a state directory others may write (the help's
/// own `/tmp` example made by another user, say): exit 3, before touching the kernel.
#[test]
fn a_world_writable_state_dir_is_refused_by_the_live_commands() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("apply-unsafe");
    let policy = dir.write("p.nq", EGRESS);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let s = state.to_str().unwrap();
    for args in [
        vec!["apply", "--state-dir", s, policy.to_str().unwrap()],
        vec!["rollback", "--state-dir", s],
        vec!["status", "--state-dir", s],
    ] {
        cli(args)
            .cwd(&dir)
            .code(3)
            .text_has("refusing the state directory")
            .text_has("writable by every user");
    }
}

/// Issue 18.4: an apply made with a confirm window whose reverter died: once the deadline
/// passed, the next apply reverts it first (as the reverter would have), so the new
/// apply's undo point is the state before the unconfirmed one.
#[test]
fn a_window_closed_without_its_reverter_is_reverted_by_the_next_apply() {
    use netqos::apply::state_dir::{Pending, now};
    use netqos::apply::transaction::{Confirm, Reverter};
    struct Gone;
    impl Reverter for Gone {
        fn start(&self, _: &StateDir, _: &Pending) -> std::io::Result<()> {
            Ok(()) // started, and died at once: it holds no reverter lock
        }
    }
    let d = Dir::new("deadwindow");
    let a = target(EGRESS);
    let b = target(&EGRESS.replace("10.42.3.0/24", "10.42.4.0/24"));
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let pristine = k.read(&a.devices()).unwrap();
    let o = transaction::Options {
        confirm: Some(Confirm {
            window: std::time::Duration::from_secs(3600),
            reverter: &Gone,
        }),
        ..options()
    };
    let Outcome::Applied(first) = Transaction::new(&mut k, &d.1, o).apply(a).unwrap() else {
        panic!("A not applied");
    };
    // Still open: refused.
    let e = Transaction::new(&mut k, &d.1, options())
        .apply(b.clone())
        .unwrap_err();
    assert!(e.to_string().contains("awaits confirmation"), "{e}");
    d.1.set_pending(Some(&Pending {
        id: first.id.clone(),
        deadline: now() - 5,
    }))
    .unwrap();
    let mut lines = Lines::default();
    let out = Transaction::new(&mut k, &d.1, options())
        .observer(&mut lines)
        .apply(b.clone())
        .unwrap();
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    assert!(
        lines
            .0
            .iter()
            .any(|l| l.contains("its reverter is gone; reverted it first")),
        "{:?}",
        lines.0
    );
    assert!(d.1.pending().unwrap().is_none());
    assert_eq!(
        d.1.record(&first.id).unwrap().unwrap().outcome,
        "reverted, not confirmed"
    );
    assert_eq!(d.1.last().unwrap().unwrap().snapshot, pristine);
}
