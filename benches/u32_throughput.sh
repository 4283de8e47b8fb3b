#!/usr/bin/env bash
# Throughput of one TCP flow through netqos's HTB with N host classes (`match dst HOST`,
# the flow matching none of them, so a linear chain makes every packet walk every rule),
# linear u32 chain against the hashed lowering (issue 16), and with no qdisc at all.
#
# Two namespaces joined by a veth pair, offloads off on both ends (ethtool -K: no TSO/GSO/
# GRO, so the qdisc sees every MTU-sized packet, as a NIC without offloads would), one
# iperf3 TCP flow for SECS seconds per run. Each round runs every configuration once, in
# a rotated order; ROUNDS rounds; per configuration the median and the spread (min..max)
# of Gbit/s, and the cost against the 1-rule tree of the same lowering measured in the
# same rounds.
#
# The hashed tree is `netqos compile --emit tc` of the policy. The linear tree is the same
# classes with the filters netqos emitted before hashing (one u32 node per host, 2,000 per
# priority), sent with `tc -batch`.
#
# Needs root, iproute2, iperf3, ethtool, python3. Usage:
#   benches/u32_throughput.sh [ROUNDS] [SECS] [SIZES...]   (default: 5 rounds, 4 s, 1 1000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-4}
shift 2 || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 1000 10000)
cargo build --release --quiet
bin=$PWD/target/release/netqos
tmp=$(mktemp -d)
a="u32tp-a-$$"
b="u32tp-b-$$"
cleanup() {
    ip netns pids "$b" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$a"
ip netns add "$b"
ip -n "$a" link add eth0 type veth peer name eth0 netns "$b"
ip -n "$a" addr add 10.0.0.1/24 dev eth0
ip -n "$b" addr add 10.0.0.2/24 dev eth0
for ns in "$a" "$b"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
done
ip netns exec "$b" iperf3 -s -D >/dev/null

# policy N: N host classes in 10.1.0.0/16 (none is the peer), and the default the flow
# lands in.
policy() {
    python3 - "$1" <<'PY'
import sys
n = int(sys.argv[1])
out = ["netqos 1", "", "interface eth0 {", "    rate 100gbit"]
for i in range(n):
    out += ["    class h%d {" % i, "        rate 1kbit",
            "        match dst 10.1.%d.%d" % (i // 256, i % 256), "    }"]
out += ["    class rest {", "        rate 90gbit", "        default", "    }", "}"]
print("\n".join(out))
PY
}

# linear TC_SCRIPT: the hashed script's tc batch with its filter lines replaced by one
# linear node per rule (what netqos emitted before hashing).
linear() {
    python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
out = []
n = 0
for l in text.splitlines():
    if l.startswith("filter add") and (" u32 divisor " in l or " link " in l):
        continue
    m = re.match(r"filter add dev (\S+) parent (\S+) protocol ip prio \d+ u32 ht \S+ (match .*)$", l)
    if m:
        dev, parent, rest = m.groups()
        out.append("filter add dev %s parent %s protocol ip prio %d u32 %s" % (dev, parent, 1 + n // 2000, rest))
        n += 1
        continue
    m = re.match(r"filter add dev (\S+) parent (\S+) protocol ip prio \d+ u32 (match .*)$", l)
    if m:
        dev, parent, rest = m.groups()
        out.append("filter add dev %s parent %s protocol ip prio %d u32 %s" % (dev, parent, 1 + n // 2000, rest))
        n += 1
        continue
    out.append(l)
print("\n".join(out))
PY
}

for n in "${sizes[@]}"; do
    policy "$n" >"$tmp/p$n.nq"
    "$bin" compile "$tmp/p$n.nq" -o "$tmp/out$n" --emit tc >/dev/null 2>&1
    linear "$tmp/out$n/netqos-apply.sh" >"$tmp/out$n/linear-apply.sh"
    nodes=$(grep -c '^filter add.* u32 .*flowid' "$tmp/out$n/netqos-apply.sh" || true)
    tables=$(grep -c '^filter add.* u32 divisor ' "$tmp/out$n/netqos-apply.sh" || true)
    echo "size $n: hashed script has $nodes classifying nodes and $tables hash tables"
done

# config: "none", or "hashed N" / "linear N".
install() {
    ip netns exec "$a" tc qdisc del dev eth0 root 2>/dev/null || true
    case $1 in
        none) ;;
        hashed) ip netns exec "$a" sh "$tmp/out$2/netqos-apply.sh" >/dev/null 2>&1 ;;
        linear) ip netns exec "$a" sh "$tmp/out$2/linear-apply.sh" >/dev/null 2>&1 ;;
    esac
}

measure() {
    ip netns exec "$a" timeout $((secs + 10)) iperf3 -c 10.0.0.2 -t "$secs" -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

configs=("none")
for n in "${sizes[@]}"; do configs+=("linear $n" "hashed $n"); done
: >"$tmp/results"
for r in $(seq 1 "$rounds"); do
    count=${#configs[@]}
    for i in $(seq 0 $((count - 1))); do
        c=${configs[$(((i + r) % count))]}
        # shellcheck disable=SC2086
        install $c
        g=$(measure)
        # The tree really is what it should be (hashed: tables; linear: none).
        t=$(ip netns exec "$a" tc filter show dev eth0 | grep -c 'divisor 256' || true)
        echo "round $r: $c: $g Gbit/s (hash tables: $t)"
        echo "$c|$g" >>"$tmp/results"
    done
done
ip netns exec "$a" tc qdisc del dev eth0 root 2>/dev/null || true

python3 - "$tmp/results" "${sizes[0]}" <<'PY'
import statistics, sys
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
by = {}
for c, g in rows:
    by.setdefault(c, []).append(float(g))
base = sys.argv[2]
print()
print("%-14s %8s %14s %10s" % ("config", "median", "min..max", "vs 1 rule"))
for c, v in by.items():
    med = statistics.median(v)
    ref = None
    kind = c.split()[0]
    if kind in ("linear", "hashed") and ("%s %s" % (kind, base)) in by:
        ref = statistics.median(by["%s %s" % (kind, base)])
    cost = "" if ref is None else "%+.1f %%" % (100 * (med / ref - 1))
    print("%-14s %8.2f %6.2f..%-6.2f %10s" % (c, med, min(v), max(v), cost))
PY
