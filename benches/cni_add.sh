#!/usr/bin/env bash
# The netqos CNI plugin's ADD against the bandwidth plugin's own ADD, for the same pod: a
# `1M`/`1M` sandbox (containerd's runtimeConfig) on a ptp veth in two network namespaces
# made here. Each iteration runs bandwidth's ADD (tbf on the host veth, IFB, ingress qdisc,
# redirect filter, tbf on the IFB), then netqos's ADD (enter the pod netns, find both tbfs,
# change their bucket, read them back), each a fresh process as a runtime runs it; then
# undoes both (bandwidth's DEL and the veth's qdiscs, not timed). Pairs alternate which
# plugin's timing is taken first in the median; prints the medians and the ratio
# netqos / bandwidth.
#
# Needs root, iproute2 and the CNI plugins (containernetworking-plugins).
# Usage: benches/cni_add.sh [ITERATIONS] (default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-40}
cargo build --release --quiet
bin=$PWD/target/release/netqos
cni=${NETQOS_CNI_PATH:-/usr/lib/cni}
h="nqbh-$$" p="nqbp-$$"
tmp=$(mktemp -d)
cleanup() { ip netns del "$h" 2>/dev/null || true; ip netns del "$p" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ip netns add "$h"
ip netns add "$p"
run() { # COMMAND PLUGIN CONFIG
    ip netns exec "$h" env CNI_COMMAND="$1" CNI_CONTAINERID=bench0123 CNI_NETNS="/var/run/netns/$p" \
        CNI_IFNAME=eth0 CNI_PATH="$cni" "$2" <<<"$3"
}
ptp=$(run ADD "$cni/ptp" '{"cniVersion":"1.0.0","name":"cbr0","type":"ptp","ipam":{"type":"host-local","subnet":"10.96.0.0/24","dataDir":"'"$tmp"'/ipam"}}')
veth=$(python3 -c 'import json,sys; print([i["name"] for i in json.loads(sys.argv[1])["interfaces"] if not i.get("sandbox")][0])' "$ptp")
rc='"runtimeConfig":{"bandwidth":{"IngressRate":1000000,"IngressBurst":4294967295,"EgressRate":1000000,"EgressBurst":4294967295}}'
bw_conf='{"cniVersion":"1.0.0","name":"cbr0","type":"bandwidth","capabilities":{"bandwidth":true},'"$rc"',"prevResult":'"$ptp"'}'
python3 - "$n" "$h" "$p" "$cni" "$bin" "$veth" "$bw_conf" "$rc" <<'PY'
import json, os, statistics, subprocess, sys, time
n, h, p, cni, nq, veth, bw_conf, rc = sys.argv[1:]
n = int(n)
env = dict(os.environ, CNI_CONTAINERID="bench0123", CNI_NETNS="/var/run/netns/" + p,
           CNI_IFNAME="eth0", CNI_PATH=cni)
def plugin(cmd, binary, conf):
    t = time.perf_counter()
    r = subprocess.run(["ip", "netns", "exec", h, binary], input=conf.encode(),
                       env=dict(env, CNI_COMMAND=cmd), capture_output=True)
    dt = time.perf_counter() - t
    if r.returncode:
        sys.exit("%s %s failed: %s %s" % (binary, cmd, r.stdout, r.stderr))
    return dt, r.stdout.decode()
def sh(c):
    subprocess.run(["ip", "netns", "exec", h, "sh", "-c", c], check=False, capture_output=True)
# `ip netns exec` itself, to subtract: the same exec of /bin/true.
base = []
bw, nqt = [], []
for i in range(n):
    base.append(plugin("VERSION", "/bin/true", "")[0])
    dt, out = plugin("ADD", cni + "/bandwidth", bw_conf)
    bw.append(dt)
    conf = json.loads(bw_conf)
    conf.update({"type": "netqos", "burst": "20ms", "prevResult": json.loads(out)})
    dt, _ = plugin("ADD", nq, json.dumps(conf))
    nqt.append(dt)
    plugin("DEL", cni + "/bandwidth", bw_conf)
    sh("tc qdisc del dev %s root; tc qdisc del dev %s ingress" % (veth, veth))
m = lambda v: statistics.median(v) * 1000
b = m(base)
print("iterations: %d" % n)
print("ip netns exec + /bin/true (subtracted): %.2f ms" % b)
print("bandwidth ADD: %.2f ms (median, whole process)" % (m(bw) - b))
print("netqos ADD:    %.2f ms (median, whole process)" % (m(nqt) - b))
print("ratio netqos / bandwidth: %.2f" % ((m(nqt) - b) / (m(bw) - b)))
print("a pod's CNI ADD with netqos chained: +%.0f %% of bandwidth's own" % (100 * (m(nqt) - b) / (m(bw) - b)))
PY
