//! `netqos agent` on a real kernel, in network namespaces: every drift kind of the issue is
//! repaired within a second and counted in `/metrics`; a bad policy edit keeps the old
//! tree; an apply the kernel refuses is undone and turns `/healthz` unhealthy; SIGTERM
//! leaves the tree; a second agent on the state directory is refused; kill -9 and a
//! restart converge without a rebuild (counters kept); hostile HTTP input changes
//! nothing; the mirror equals a fresh read after each kind of change; a real Prometheus
//! scrapes the agent and sees the control-plane byte counter grow; `promtool check
//! metrics` passes on both expositions.
//!
//! Every wait has a deadline; agents and Prometheus are killed when a test ends.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Netns;

const POLICY: &str = r#"netqos 1

let peer = { 10.0.0.2 }

interface eth0 {
    rate 100mbit
    class control-plane {
        rate 20mbit
        ceil 100mbit
        prio 0
        match dst $peer
    }
    class bulk {
        rate 50mbit
        default
    }
}

interface eth0 ingress {
    rate 100mbit
    class control-plane {
        rate 30mbit
        match src $peer
    }
    class rest {
        rate 50mbit
        default
    }
}

pods {
    cni flannel
    limit app=backup egress 50mbit
}
"#;

/// A namespace with `eth0` (10.0.0.1) ↔ `peer0` (10.0.0.2, in a second namespace), a
/// state directory, a policy file and a conflist.
struct Node {
    ns: Netns,
    peer: Netns,
    dir: crate::support::TempDir,
}

impl Node {
    fn new(tag: &str) -> Option<Node> {
        let ns = Netns::new(&format!("ag{tag}"))?;
        let peer = Netns::new(&format!("ap{tag}"))?;
        let dir = crate::support::TempDir::new(&format!("agent-{tag}"));
        let node = Node { ns, peer, dir };
        node.add_eth0();
        node.ns.ok("ip link set lo up");
        node.peer.ok("ip link set lo up");
        std::fs::write(node.policy(), POLICY).expect("policy");
        std::fs::copy(
            crate::support::root().join("tests/fixtures/conflists/flannel-upstream.conflist"),
            node.conflist(),
        )
        .expect("conflist");
        Some(node)
    }

    fn add_eth0(&self) {
        self.ns.ok(&format!(
            "ip link add eth0 type veth peer name peer0 netns {p} && ip addr add 10.0.0.1/24 dev eth0 \
             && ip link set eth0 up",
            p = self.peer.0
        ));
        self.peer
            .ok("ip addr add 10.0.0.2/24 dev peer0 && ip link set peer0 up");
    }

    fn policy(&self) -> PathBuf {
        self.dir.join("policy.nq")
    }

    fn conflist(&self) -> PathBuf {
        self.dir.join("10-flannel.conflist")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn netqos(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns.0, env!("CARGO_BIN_EXE_netqos")])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("netqos runs")
    }

    /// Starts an agent; its log goes to `agent-N.log`.
    fn agent(&self, n: usize, env: &[(&str, &str)]) -> Agent {
        let log = self.dir.join(format!("agent-{n}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.0, env!("CARGO_BIN_EXE_netqos")])
            .arg("agent")
            .arg("--state-dir")
            .arg(self.state())
            .arg("--conflist")
            .arg(self.conflist())
            .arg(self.policy())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("agent starts");
        Agent {
            child: Some(child),
            log,
        }
    }

    /// `GET path` on the agent inside the namespace: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let (status, body) = self.raw(req.as_bytes(), Duration::ZERO);
        (status, body)
    }

    /// Sends `bytes` (then waits `pause` before reading) to the agent's port.
    fn raw(&self, bytes: &[u8], pause: Duration) -> (u16, String) {
        let text = in_ns(&self.ns.0, {
            let bytes = bytes.to_vec();
            move || http(AGENT_PORT, &bytes, pause)
        });
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let (s, body) = self.get("/metrics");
        if s != 200 {
            return None;
        }
        value(&body, name_and_labels)
    }

    /// Waits until the agent answers /healthz with 200 (it applied the policy).
    fn wait_healthy(&self, agent: &mut Agent) {
        let ok = wait(Duration::from_secs(20), || self.get("/healthz").0 == 200);
        assert!(ok, "the agent did not become healthy:\n{}", agent.log());
    }

    fn tc(&self, args: &str) -> String {
        self.ns.ok(&format!("tc {args}"))
    }
}

const AGENT_PORT: u16 = 9787;

/// A running agent, killed on drop.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            // `ip netns exec` execs the command: the child's pid is the agent's.
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit (bounded); its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `f` on a thread moved into network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// One HTTP exchange on 127.0.0.1:port; the whole answer ("" if none).
fn http(port: u16, bytes: &[u8], pause: Duration) -> String {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(bytes);
    std::thread::sleep(pause);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the sample `name{labels}` in an exposition.
fn value(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

fn drift(kind: &str) -> String {
    format!("netqos_drift_events_total{{kind=\"{kind}\"}}")
}

fn repairs(kind: &str) -> String {
    format!("netqos_drift_repairs_total{{kind=\"{kind}\"}}")
}

/// The managed state as `tc` prints it (qdiscs, classes, filters of eth0 and the IFB, the
/// ingress hook's filters), read by one shell so that polling it is cheap.
fn tree(node: &Node) -> String {
    let text = node.ns.ok(
        "for d in eth0 ifb-eth0; do tc qdisc show dev $d; tc class show dev $d | sort; \
         tc filter show dev $d; done; tc filter show dev eth0 ingress",
    );
    // The mirred action's index counts up each time one is created, and HTB counts packets
    // it sent directly (a packet that arrived while a deleted default class was missing):
    // neither is managed state.
    text.lines()
        .filter(|l| !l.trim_start().starts_with("index "))
        .map(without_direct_packets_stat)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `… direct_packets_stat 3 direct_qlen …` → `… direct_qlen …`.
fn without_direct_packets_stat(line: &str) -> String {
    let mut words: Vec<&str> = line.split(' ').collect();
    if let Some(i) = words.iter().position(|w| *w == "direct_packets_stat") {
        words.drain(i..(i + 2).min(words.len()));
    }
    words.join(" ")
}

fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("want `{x}`\nhave `{y}`"))
        .unwrap_or_else(|| format!("{} lines vs {}", a.lines().count(), b.lines().count()))
}

/// Makes one kind of drift and checks that it is repaired within a second of the agent
/// seeing it (its own measure, `netqos_last_repair_seconds`; the test's polling of `tc`
/// under a loaded test run is slower than the agent) and counted.
fn repaired(node: &Node, agent: &Agent, kind: &str, break_it: &str, pristine: &str) {
    let events = node.metric(&drift(kind)).unwrap_or(-1.0);
    let fixed = node.metric(&repairs(kind)).unwrap_or(-1.0);
    node.ns.ok(break_it);
    let start = Instant::now();
    let back = wait(Duration::from_secs(5), || tree(node) == pristine);
    let took = start.elapsed();
    assert!(
        back,
        "`{break_it}` was not repaired ({took:?}): {}\nagent log:\n{}",
        first_difference(pristine, &tree(node)),
        agent.log()
    );
    let counted = wait(Duration::from_secs(2), || {
        node.metric(&drift(kind)).is_some_and(|v| v > events)
            && node.metric(&repairs(kind)).is_some_and(|v| v > fixed)
    });
    assert!(
        counted,
        "`{break_it}` repaired in {took:?} but not counted as {kind}:\n{}",
        node.get("/metrics").1
    );
    let agent_took = node.metric("netqos_last_repair_seconds");
    assert!(
        agent_took.is_some_and(|s| s > 0.0 && s <= 1.0),
        "`{break_it}`: the agent took {agent_took:?} s to repair it:\n{}",
        agent.log()
    );
}

#[test]
fn the_agent_repairs_each_kind_of_drift_within_a_second_and_counts_it() {
    let Some(node) = Node::new("drift") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let conflist = std::fs::read_to_string(node.conflist()).unwrap();
    assert!(conflist.contains("\"bandwidth\""), "{conflist}");
    let pristine = tree(&node);
    assert!(pristine.contains("qdisc htb 1: root"), "{pristine}");
    let bulk = node
        .tc("class show dev eth0")
        .lines()
        .find(|l| l.contains("rate 50Mbit"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .expect("the bulk class");
    let cp = node
        .tc("class show dev eth0")
        .lines()
        .find(|l| l.contains("rate 20Mbit"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .expect("the control-plane class");
    repaired(
        &node,
        &agent,
        "class",
        &format!("tc class del dev eth0 classid {bulk}"),
        &pristine,
    );
    repaired(
        &node,
        &agent,
        "class",
        &format!("tc class change dev eth0 classid {cp} htb rate 1mbit"),
        &pristine,
    );
    repaired(
        &node,
        &agent,
        "root_qdisc",
        "tc qdisc replace dev eth0 root pfifo",
        &pristine,
    );
    repaired(
        &node,
        &agent,
        "leaf_qdisc",
        &format!("tc qdisc replace dev eth0 parent {cp} handle 77: pfifo limit 5"),
        &pristine,
    );
    repaired(
        &node,
        &agent,
        "filter",
        "tc filter del dev eth0 parent 1: prio 1",
        &pristine,
    );
    repaired(
        &node,
        &agent,
        "ingress_hook",
        "tc qdisc del dev eth0 ingress",
        &pristine,
    );
    repaired(
        &node,
        &agent,
        "link",
        "ip link set ifb-eth0 down",
        &pristine,
    );
    // The interface goes away and comes back: re-applied when it returns.
    let events = node.metric(&drift("link")).unwrap_or(-1.0);
    node.ns.ok("ip link del eth0");
    assert!(
        wait(Duration::from_secs(2), || node
            .metric(&drift("link"))
            .is_some_and(|v| v > events)),
        "a missing device is drift"
    );
    assert_eq!(
        node.get("/healthz").0,
        503,
        "unhealthy while eth0 is missing"
    );
    node.add_eth0();
    let back = wait(Duration::from_secs(5), || {
        node.tc("qdisc show dev eth0").contains("qdisc htb 1: root")
    });
    assert!(back, "not re-applied when eth0 came back:\n{}", agent.log());
    let took = node.metric("netqos_last_repair_seconds");
    assert!(took.is_some_and(|s| s <= 1.0), "{took:?}\n{}", agent.log());
    assert!(wait(Duration::from_secs(2), || tree(&node) == pristine));
    assert!(wait(Duration::from_secs(2), || node.get("/healthz").0 == 200));
    // The conflist rewritten without the bandwidth entry (as a CNI pod restart does).
    let fixed = node.metric(&repairs("conflist")).unwrap_or(-1.0);
    let original =
        crate::support::root().join("tests/fixtures/conflists/flannel-upstream.conflist");
    let tmp = node.dir.join(".rewrite");
    std::fs::copy(&original, &tmp).unwrap();
    std::fs::rename(&tmp, node.conflist()).unwrap();
    let start = Instant::now();
    let back = wait(Duration::from_secs(5), || {
        std::fs::read_to_string(node.conflist()).is_ok_and(|t| t.contains("\"bandwidth\""))
    });
    assert!(
        back,
        "conflist not repaired in {:?}:\n{}",
        start.elapsed(),
        agent.log()
    );
    assert!(wait(Duration::from_secs(2), || node
        .metric(&repairs("conflist"))
        .is_some_and(|v| v > fixed)));
    // Seen at the next file tick (a quarter second), repaired well within the second.
    let took = node.metric("netqos_last_repair_seconds");
    assert!(took.is_some_and(|s| s <= 1.0), "{took:?}\n{}", agent.log());
    // Nothing else was touched and everything was counted as applied.
    assert_eq!(tree(&node), pristine);
    assert_eq!(
        node.metric("netqos_applies_total{outcome=\"rolled_back\"}"),
        Some(0.0)
    );
    agent.signal("TERM");
    assert_eq!(
        agent.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        agent.log()
    );
}

#[test]
fn a_bad_edit_keeps_the_old_tree_and_a_good_one_is_applied_on_change_and_sighup() {
    let Some(node) = Node::new("edit") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let before = tree(&node);
    let write = |text: &str| {
        let tmp = node.dir.join(".policy.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, node.policy()).unwrap();
    };
    write(&POLICY.replace("rate 20mbit", "rate 20mbps"));
    assert!(
        wait(Duration::from_secs(3), || node
            .metric("netqos_applies_total{outcome=\"refused\"}")
            == Some(1.0)),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains("NQ006"), "{}", agent.log());
    assert_eq!(tree(&node), before, "a bad policy must not change the tree");
    assert_eq!(node.get("/healthz").0, 200);
    // A good edit is applied in place.
    write(&POLICY.replace("rate 20mbit", "rate 25mbit"));
    assert!(
        wait(Duration::from_secs(3), || node
            .tc("class show dev eth0")
            .contains("rate 25Mbit")),
        "{}",
        agent.log()
    );
    // SIGHUP re-reads the vars too: the same text is "unchanged", nothing applied.
    let applied = Some(2.0);
    assert!(wait(Duration::from_secs(3), || node
        .metric("netqos_applies_total{outcome=\"applied\"}")
        == applied));
    agent.signal("HUP");
    assert!(wait(Duration::from_secs(3), || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("SIGHUP") && l.contains("policy unchanged"))
    }));
    assert_eq!(
        node.metric("netqos_applies_total{outcome=\"applied\"}"),
        applied
    );
}

#[test]
fn an_apply_the_kernel_refuses_is_undone_and_turns_healthz_unhealthy() {
    let Some(node) = Node::new("refuse") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let good = tree(&node);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(0));
    // The same node, a changed policy, and a kernel that refuses the second change.
    std::fs::write(node.policy(), POLICY.replace("rate 20mbit", "rate 25mbit")).unwrap();
    let agent = node.agent(2, &[("NETQOS_FAIL_AFTER", "0")]);
    assert!(
        wait(Duration::from_secs(10), || node
            .get("/healthz")
            .1
            .contains("refused")),
        "{}",
        agent.log()
    );
    let (code, why) = node.get("/healthz");
    assert_eq!(code, 503);
    assert!(why.contains("refused"), "{why}");
    assert_eq!(
        node.metric("netqos_applies_total{outcome=\"rolled_back\"}"),
        Some(1.0)
    );
    assert_eq!(tree(&node), good, "undone to the last good state");
    // Putting the last good policy back is a good apply (nothing to change): healthy.
    std::fs::write(node.policy(), POLICY).unwrap();
    assert!(
        wait(Duration::from_secs(5), || node.get("/healthz").0 == 200),
        "{}",
        agent.log()
    );
    drop(agent);
}

#[test]
fn sigterm_keeps_the_tree_a_second_agent_is_refused_and_kill_9_restart_converges() {
    let Some(node) = Node::new("life") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    // A second agent on the same state directory is refused at once.
    let second = node.netqos(&[
        "agent",
        "--listen",
        "127.0.0.1:9788",
        "--state-dir",
        node.state().to_str().unwrap(),
        node.policy().to_str().unwrap(),
    ]);
    assert_eq!(second.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&second.stderr).contains("holds"));
    let before = tree(&node);
    // Traffic through the control-plane class, then kill -9.
    node.ns.ok("ping -c 5 -i 0.05 -W 1 10.0.0.2 >/dev/null");
    let cp = "class=\"control-plane\"";
    let bytes_of = |node: &Node| -> f64 {
        let (_, body) = node.get("/metrics");
        body.lines()
            .find(|l| {
                l.starts_with("netqos_class_bytes_total{") && l.contains(cp) && l.contains("egress")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let counted = bytes_of(&node);
    assert!(counted > 0.0, "ping counted in control-plane");
    agent.signal("KILL");
    assert!(
        agent
            .wait_exit(Duration::from_secs(5))
            .is_none_or(|c| c != 0)
    );
    assert_eq!(tree(&node), before, "kill -9 leaves the tree");
    let mut agent = node.agent(2, &[]);
    node.wait_healthy(&mut agent);
    assert_eq!(
        node.metric("netqos_applies_total{outcome=\"unchanged\"}"),
        Some(1.0),
        "a restart over the same tree changes nothing:\n{}",
        agent.log()
    );
    assert!(
        bytes_of(&node) >= counted,
        "counters of untouched classes kept"
    );
    assert_eq!(tree(&node), before);
    // SIGTERM: exit 0, the tree stays.
    agent.signal("TERM");
    assert_eq!(
        agent.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        agent.log()
    );
    assert_eq!(tree(&node), before, "SIGTERM must not reshape the node");
    assert!(agent.log().contains("the policy stays in place"));
}

#[test]
fn hostile_http_input_gets_an_error_and_changes_nothing() {
    let Some(node) = Node::new("http") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let before = tree(&node);
    let applies = node.metric("netqos_applies_total{outcome=\"applied\"}");
    let status = |bytes: &[u8], pause: Duration| node.raw(bytes, pause).0;
    // Oversized head, unknown path, non-GET, garbage, a header-only flood.
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    assert_eq!(status(&big, Duration::ZERO), 431);
    assert_eq!(status(b"GET /admin HTTP/1.1\r\n\r\n", Duration::ZERO), 404);
    assert_eq!(
        status(b"GET /metrics/../x HTTP/1.1\r\n\r\n", Duration::ZERO),
        404
    );
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let req = format!("{m} /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\nstop");
        assert_eq!(status(req.as_bytes(), Duration::ZERO), 405, "{m}");
    }
    assert_eq!(status(b"\x16\x03\x01\x02\x00\r\n\r\n", Duration::ZERO), 400);
    // A slow client: half a request, then silence past the deadline.
    let start = Instant::now();
    let (code, _) = in_ns(&node.ns.0, || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", AGENT_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /metr").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        (
            text.split(' ')
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(0),
            text,
        )
    });
    assert_eq!(code, 408);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // Nothing changed and the endpoint still works.
    assert_eq!(tree(&node), before);
    assert_eq!(
        node.metric("netqos_applies_total{outcome=\"applied\"}"),
        applies
    );
    assert_eq!(node.get("/healthz").0, 200);
    assert_eq!(node.get("/metrics").0, 200);
}

#[test]
fn promtool_accepts_the_agent_and_status_expositions() {
    if !crate::support::tool("promtool", "prometheus") {
        return;
    }
    let Some(node) = Node::new("promtool") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let (_, body) = node.get("/metrics");
    let status = node.netqos(&[
        "status",
        "--state-dir",
        node.state().to_str().unwrap(),
        "--format",
        "prometheus",
    ]);
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("class=\"control-plane\""), "{text}");
    for (what, expo) in [("agent", body), ("status", text)] {
        let mut p = Command::new("timeout")
            .args(["20", "promtool", "check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        p.stdin.take().unwrap().write_all(expo.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on the {what} exposition:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = node.netqos(&[
        "status",
        "--state-dir",
        node.state().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let names: Vec<&str> = v["metrics"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["class"].as_str())
        .collect();
    assert!(
        names.contains(&"control-plane") && names.contains(&"rest"),
        "{names:?}"
    );
}

/// A Prometheus server in the node's namespace, killed on drop.
struct Prometheus {
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_agent_and_sees_the_control_plane_bytes_grow() {
    if !crate::support::tool("prometheus", "prometheus") {
        return;
    }
    let Some(node) = Node::new("prom") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let config = node.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: netqos\n    \
             static_configs:\n      - targets: ['127.0.0.1:{AGENT_PORT}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(node.dir.join("prometheus.log")).unwrap();
    let _prom = Prometheus {
        child: Command::new("ip")
            .args(["netns", "exec", &node.ns.0, "timeout", "90", "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                node.dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    };
    let query = |q: &str| -> Option<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let text = in_ns(&node.ns.0, move || {
            http(9090, req.as_bytes(), Duration::ZERO)
        });
        let body = text.split_once("\r\n\r\n")?.1;
        // Chunked or not, the JSON object is between the first `{` and the last `}`.
        let json = &body[body.find('{')?..=body.rfind('}')?];
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let q = "netqos_class_bytes_total{class=\"control-plane\",direction=\"egress\"}";
    let first = {
        let mut got = None;
        wait(Duration::from_secs(30), || {
            got = query(q);
            got.is_some()
        });
        got.unwrap_or_else(|| {
            panic!(
                "Prometheus never returned {q}:\n{}",
                std::fs::read_to_string(node.dir.join("prometheus.log")).unwrap_or_default()
            )
        })
    };
    // Traffic to the peer goes through the control-plane class.
    node.ns
        .ok("ping -c 20 -i 0.05 -s 1000 -W 1 10.0.0.2 >/dev/null");
    let mut last = first;
    let grew = wait(Duration::from_secs(20), || {
        last = query(q).unwrap_or(last);
        last >= first + 20_000.0
    });
    assert!(
        grew,
        "the control-plane byte counter did not grow in Prometheus: {first} → {last}"
    );
    let rate = query(&format!("increase({q}[1m])"));
    assert!(
        rate.is_some_and(|r| r > 0.0),
        "increase() over the scrapes: {rate:?}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_mirror_equals_a_fresh_read_after_each_kind_of_change() {
    use netqos::agent::mirrored::Mirrored;
    use netqos::apply::kernel::{Kernel, NetlinkKernel};
    let Some(node) = Node::new("mirror") else {
        return;
    };
    let out = node.netqos(&[
        "apply",
        "--state-dir",
        node.state().to_str().unwrap(),
        "--conflist",
        node.conflist().to_str().unwrap(),
        node.policy().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let devices: Vec<String> = vec!["eth0".into(), "ifb-eth0".into()];
    let steps: Vec<&'static str> = vec![
        "tc class change dev eth0 classid 1:1 htb rate 7mbit",
        "tc qdisc replace dev eth0 parent 1:1 handle 55: pfifo",
        "tc qdisc add dev eth0 parent 1:1 handle 55: pfifo 2>/dev/null; tc qdisc del dev eth0 parent 1:1",
        "tc filter add dev eth0 parent 1: prio 1 protocol ip u32 match ip dst 10.9.9.9/32 flowid 1:1",
        "tc filter del dev eth0 parent 1: prio 1 handle 800::800 u32",
        "tc filter del dev eth0 parent 1: prio 1",
        "tc class add dev eth0 parent 1:1 classid 1:99 htb rate 1mbit",
        "tc class del dev eth0 classid 1:99",
        "ip link set ifb-eth0 down",
        "tc qdisc del dev eth0 ingress",
        "tc qdisc replace dev eth0 root pfifo",
        "ip link del ifb-eth0",
        "tc qdisc del dev eth0 root",
    ];
    let failures = in_ns(&node.ns.0, move || {
        let mut k = Mirrored::open(NetlinkKernel::open().expect("rtnetlink")).expect("events");
        k.reread(&devices).expect("first read");
        let mut failures = Vec::new();
        for step in steps {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(step)
                .status()
                .is_ok_and(|s| s.success());
            let mirrored = k.read(&devices).expect("mirror read");
            let mut fresh = NetlinkKernel::open().expect("rtnetlink");
            let real = fresh.read(&devices).expect("fresh read");
            if mirrored != real {
                failures.push(format!(
                    "after `{step}` (ok: {ok}):\nmirror {mirrored:#?}\nkernel {real:#?}"
                ));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["10", "tmux", "-L", &self.0])
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

#[test]
fn top_shows_the_live_tree_in_a_terminal_and_q_quits() {
    if !crate::support::tool("tmux", "tmux") {
        return;
    }
    let Some(node) = Node::new("top") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let tmux = Tmux(format!("nqtop-{}", std::process::id()));
    let cmd = format!(
        "ip netns exec {} {} top --state-dir {} eth0; echo EXITED $?; sleep 60",
        node.ns.0,
        env!("CARGO_BIN_EXE_netqos"),
        node.state().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &cmd,
    ]);
    // Traffic to the peer runs through the control-plane class while top watches.
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &node.ns.0, "ping", "-q", "-c", "60", "-i", "0.05",
        ])
        .args(["-s", "1200", "-W", "1", "10.0.0.2"])
        .stdout(Stdio::null())
        .spawn()
        .expect("ping");
    let mut ping = Agent {
        child: Some(ping),
        log: PathBuf::new(),
    };
    let live = |s: &str| {
        s.lines().any(|l| {
            l.contains("control-plane")
                && l.contains("egress")
                && (l.contains("kbit/s  ") || l.contains("Mbit/s  "))
                && !l.contains(" 0 bit/s")
        })
    };
    let mut screen = String::new();
    let seen = wait(Duration::from_secs(10), || {
        screen = tmux.screen();
        live(&screen)
    });
    assert!(seen, "no live control-plane rate on screen:\n{screen}");
    for col in [
        "IFACE",
        "CLASS",
        "RATE",
        "GUARANTEE",
        "CEIL",
        "DROPS",
        "BACKLOG",
    ] {
        assert!(screen.contains(col), "{col}:\n{screen}");
    }
    // The tree: the root class first, its children indented under it.
    let rows: Vec<&str> = screen.lines().filter(|l| l.starts_with("eth0")).collect();
    assert!(
        rows.first().is_some_and(|r| r.contains("(root)")),
        "{screen}"
    );
    assert!(
        rows.iter().any(|r| r.contains("  control-plane")),
        "{screen}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("ingress") && r.contains("  rest")),
        "{screen}"
    );
    let _ = ping.wait_exit(Duration::ZERO);
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let quit = wait(Duration::from_secs(5), || {
        tmux.screen().contains("EXITED 0")
    });
    assert!(quit, "q did not quit top:\n{}", tmux.screen());
}

const POD_POLICY: &str = r#"netqos 1

interface eth0 {
    rate 100mbit
    class control-plane {
        rate 20mbit
        ceil 100mbit
        prio 0
        match dst 10.0.0.2 tcp dport 6443
    }
    class pods {
        rate 30mbit
        prio 1
        match pods
    }
    class bulk {
        rate 50mbit
        prio 1
        default
    }
}

pods {
    cni flannel
    cidr 10.42.0.0/16
}
"#;

/// A policy that classifies pod traffic at its source: the agent installs netqos's
/// nftables table with the tree and puts it back when it is deleted by hand.
#[test]
fn the_agent_installs_the_pod_rules_table_and_repairs_its_deletion() {
    if !crate::support::kernel_tool("nft", "nftables") {
        return;
    }
    let Some(node) = Node::new("nft") else {
        return;
    };
    std::fs::write(node.policy(), POD_POLICY).expect("policy");
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let table = || {
        Command::new("ip")
            .args([
                "netns", "exec", &node.ns.0, "nft", "list", "table", "inet", "netqos",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let installed = table();
    assert!(
        installed.contains("meta priority set"),
        "the agent did not install the pod rules:\n{installed}\nagent log:\n{}",
        agent.log()
    );
    let events = node.metric(&drift("nftables")).unwrap_or(0.0);
    node.ns.ok("nft delete table inet netqos");
    let back = wait(Duration::from_secs(5), || table() == installed);
    assert!(
        back,
        "the deleted table was not put back:\n{}\nagent log:\n{}",
        table(),
        agent.log()
    );
    let counted = wait(Duration::from_secs(2), || {
        node.metric(&drift("nftables")).is_some_and(|v| v > events)
    });
    assert!(counted, "not counted:\n{}", node.get("/metrics").1);
    agent.signal("TERM");
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        agent.log()
    );
    assert_eq!(table(), installed, "SIGTERM keeps the table");
}

/// The node's state directory, read as `status` and `rollback` read it.
fn state_dir(node: &Node) -> netqos::apply::state_dir::StateDir {
    netqos::apply::state_dir::StateDir::open(&node.state()).expect("state dir")
}

/// The record of the last transaction (from the transaction log of the agent's scoped
/// applies, or the per-transaction files), as JSON.
fn last_record(node: &Node) -> serde_json::Value {
    let record = state_dir(node)
        .last()
        .expect("readable")
        .expect("a last one");
    serde_json::to_value(&record).expect("record is JSON")
}

/// The classes a record's snapshot holds on `dev`.
fn snapshot_classes(record: &serde_json::Value, dev: &str) -> usize {
    record["snapshot"]["devs"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == dev))
        .and_then(|d| d["classes"].as_array())
        .map_or(0, Vec::len)
}

/// Issue 14 (the one-class re-apply): an edit is applied in the scope of what changed —
/// the record snapshots only that class (and its parent) and the applied target gets a line in
/// the transaction log (`txn.wal`) that `status` replays (no drift); a scoped transaction killed between
/// its two changes is undone to its snapshot by `netqos rollback`, and a second rollback
/// returns the class and the applied target to before the edit; `netqos apply` saves the
/// class names as the agent does.
#[test]
fn an_edit_is_applied_in_scope_and_an_interrupted_one_is_undone() {
    let Some(node) = Node::new("scope") else {
        return;
    };
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let original = tree(&node);
    let write = |text: &str| {
        let tmp = node.dir.join(".policy.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, node.policy()).unwrap();
    };
    let one = POLICY.replace("rate 20mbit", "rate 25mbit");
    write(&one);
    assert!(
        wait(Duration::from_secs(5), || agent.log().lines().any(|l| l
            .contains("policy file changed")
            && l.contains("now enforcing"))),
        "{}",
        agent.log()
    );
    let edited = tree(&node);
    assert!(edited.contains("rate 25Mbit"), "{edited}");
    let record = last_record(&node);
    assert!(record["scope"].is_object(), "a scoped record: {record}");
    // The class and the one above it (its depth orders removals), of the tree's 3.
    assert_eq!(snapshot_classes(&record, "eth0"), 2, "{record}");
    let log = std::fs::metadata(node.state().join("txn.wal")).map_or(0, |m| m.len());
    assert!(log > 0, "the scoped apply is in the transaction log");
    let status = node.netqos(&["status", "--state-dir", node.state().to_str().unwrap()]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("drift: none"), "{out}");
    // Two classes change; the agent pauses after the first, and is killed there.
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(0));
    let pause = [("NETQOS_PAUSE_AFTER", "1"), ("NETQOS_PAUSE_SECS", "60")];
    let mut agent = node.agent(2, &pause);
    node.wait_healthy(&mut agent);
    write(
        &one.replacen("rate 50mbit", "rate 45mbit", 1)
            .replace("rate 25mbit", "rate 26mbit"),
    );
    assert!(
        wait(Duration::from_secs(5), || state_dir(&node)
            .interrupted()
            .is_ok_and(|r| r.is_some())
            && tree(&node) != edited),
        "{}",
        agent.log()
    );
    agent.signal("KILL");
    let _ = agent.wait_exit(Duration::from_secs(5));
    assert_ne!(tree(&node), edited, "killed between the two changes");
    let state = node.state();
    let state = state.to_str().unwrap();
    let undo = node.netqos(&["rollback", "--state-dir", state]);
    let said = String::from_utf8_lossy(&undo.stdout);
    assert!(said.contains("interrupted transaction"), "{said}");
    assert_eq!(
        tree(&node),
        edited,
        "the interrupted edit undone to its snapshot"
    );
    let back = node.netqos(&["rollback", "--state-dir", state]);
    assert_eq!(back.status.code(), Some(0), "{back:?}");
    assert_eq!(tree(&node), original, "the scoped apply rolled back");
    let status = node.netqos(&["status", "--state-dir", state]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains("drift: none"),
        "the applied target is back too: {out}"
    );
    // `netqos apply` saves the class names, as the agent does.
    let names = node.state().join("classes.json");
    std::fs::remove_file(&names).unwrap();
    let conflist = node.conflist();
    let policy = node.policy();
    let mut args = vec!["apply", "-q", "--state-dir", state, "--conflist"];
    args.extend([conflist.to_str().unwrap(), policy.to_str().unwrap()]);
    let applied = node.netqos(&args);
    assert_eq!(applied.status.code(), Some(0), "{applied:?}");
    let saved = std::fs::read_to_string(&names).unwrap_or_default();
    assert!(saved.contains("control-plane"), "{saved}");
}

/// Issue 14: on a hashed tree (20 host rules: a u32 hash table, `lower::hash`) the mirror
/// follows the nodes in the table's buckets, so a bucket node deleted by hand (`tc filter
/// del … handle 1:B:800`) is repaired from the event alone: counted as filter drift, one
/// change, and no re-read of the device (the mirror's read counters stay).
#[test]
fn a_deleted_bucket_node_of_a_hashed_tree_is_repaired_in_scope() {
    let Some(node) = Node::new("hash") else {
        return;
    };
    let hosts: Vec<String> = (1..=20).map(|i| format!("10.0.1.{i}")).collect();
    let policy = format!(
        "netqos 1\n\ninterface eth0 {{\n    rate 100mbit\n    class hosts {{\n        rate 20mbit\n        \
         match dst {{ {} }}\n    }}\n    class bulk {{\n        rate 50mbit\n        default\n    }}\n}}\n",
        hosts.join(", ")
    );
    std::fs::write(node.policy(), policy).expect("policy");
    let mut agent = node.agent(1, &[]);
    node.wait_healthy(&mut agent);
    let filters = node.tc("filter show dev eth0");
    // `… fh 1:5:800 order 2048 key ht 1 bkt 5 flowid 1:…`: a node in a bucket of table 1.
    let bucket = filters
        .lines()
        .filter(|l| l.contains("flowid"))
        .filter_map(|l| l.split(" fh ").nth(1)?.split(' ').next())
        .find(|h| {
            let parts: Vec<&str> = h.split(':').collect();
            parts.len() == 3 && parts[0] != "800" && !parts[1].is_empty()
        })
        .unwrap_or_else(|| panic!("no bucket node in:\n{filters}"))
        .to_string();
    let prio = filters
        .lines()
        .find(|l| l.contains(&format!(" fh {bucket} ")))
        .and_then(|l| {
            l.split(" pref ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .expect("its priority");
    let pristine = tree(&node);
    let reads = |kind: &str| node.metric(&format!("netqos_mirror_reads_total{{kind=\"{kind}\"}}"));
    let before = (reads("full"), reads("partial"));
    assert!(before.0.is_some(), "{}", node.get("/metrics").1);
    let del =
        format!("tc filter del dev eth0 parent 1: protocol ip prio {prio} handle {bucket} u32");
    repaired(&node, &agent, "filter", &del, &pristine);
    let log = agent.log();
    assert!(
        log.contains("drift repair: applied 1 change(s)"),
        "one change:\n{log}"
    );
    assert_eq!(
        (reads("full"), reads("partial")),
        before,
        "the device was not re-read:\n{log}"
    );
}
