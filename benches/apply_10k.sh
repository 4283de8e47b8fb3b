#!/usr/bin/env bash
# Live apply over netlink against `tc -batch`, on the 10,000-class policy of
# benches/gen_policy.py, each in a fresh network namespace (veth eth0):
#   (a) `tc -batch` of the objects the compiled script installs (root + batch lines);
#   (b) `netqos apply` of the same policy from scratch (reads the state, snapshots it,
#       journals and sends every object);
#   (c) `netqos apply` after changing one tenant class's rate (re-apply, incremental);
#   (d) `netqos apply` of the same policy again (nothing to change).
# Needs root and iproute2. Usage: benches/apply_10k.sh [CLASSES] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
runs=${2:-3}
cargo build --release --quiet
bin=$PWD/target/release/netqos
tmp=$(mktemp -d)
nsa="nqbench-tc-$$"
nsb="nqbench-nl-$$"
cleanup() { ip netns del "$nsa" 2>/dev/null || true; ip netns del "$nsb" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
python3 benches/gen_policy.py "$n" > "$tmp/p.nq"
# One tenant class changes its rate.
python3 - "$tmp/p.nq" "$tmp/p2.nq" <<'PY'
import sys
s = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(s.replace("rate 800kbit", "rate 900kbit", 1))
PY
"$bin" compile "$tmp/p.nq" -o "$tmp/out" --emit tc -q
{
    sed -n "s/^        echo '\(qdisc add dev eth0 root handle 1: htb .*\)' >>\"\$batch\"$/\1/p" "$tmp/out/netqos-apply.sh" | head -n 1
    sed -n "/^cat >>\"\$batch\" <<'NETQOS_BATCH'$/,/^NETQOS_BATCH$/p" "$tmp/out/netqos-apply.sh" | sed '1d;$d'
} > "$tmp/batch"
objects=$(wc -l < "$tmp/batch")
# run CMD…: prints "WALL_MS CPU_MS" (CPU = user + system time of the command and its
# children; the machine is shared, so CPU time is the steadier figure).
run() {
    python3 -c '
import os, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:])
w = time.monotonic() - t
u = os.times()
if r.returncode != 0:
    sys.exit(r.returncode)
print(round(w * 1000), round((u.children_user + u.children_system) * 1000))
' "$@"
}
fresh() {
    ip netns del "$1" 2>/dev/null || true
    ip netns add "$1"
    ip -n "$1" link add eth0 type veth peer name p0
    ip -n "$1" link set eth0 up
}
echo "objects: $objects (classes, leaf qdiscs and filters of $n tenant classes, plus the root)"
# The kernel keeps some tc state in global lists (one entry per HTB class block): a tree
# alive in another namespace slows the next build down. So each measurement runs with no
# other tree alive, after the previous namespace is deleted and the kernel has settled.
# Deleting a namespace with 30,000 tc objects goes on in a kernel worker after `ip netns del`
# returns; settle waits until the CPUs have been idle (< 5 % busy) for two seconds in a row
# (at most 90 s), so that teardown never overlaps the next measurement.
settle() {
    ip netns del "$1" 2>/dev/null || true
    python3 - <<'PY'
import time
def busy():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    idle = v[3] + v[4]
    return sum(v), idle
quiet, start = 0, time.monotonic()
t0, i0 = busy()
while quiet < 2 and time.monotonic() - start < 90:
    time.sleep(1)
    t1, i1 = busy()
    frac = 1 - (i1 - i0) / max(t1 - t0, 1)
    quiet = quiet + 1 if frac < 0.05 else 0
    t0, i0 = t1, i1
PY
}
measure_tc() { fresh "$nsa"; tc_t=$(run ip netns exec "$nsa" tc -batch "$tmp/batch"); settle "$nsa"; }
for i in $(seq "$runs"); do
    rm -rf "$tmp/state"
    # Alternate which goes first.
    if [ $((i % 2)) -eq 1 ]; then measure_tc; fi
    fresh "$nsb"
    full_t=$(run ip netns exec "$nsb" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p.nq")
    changes=$(ip netns exec "$nsb" "$bin" plan --format json "$tmp/p2.nq" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
    one_t=$(run ip netns exec "$nsb" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p2.nq")
    none_t=$(run ip netns exec "$nsb" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p2.nq")
    settle "$nsb"
    if [ $((i % 2)) -eq 0 ]; then measure_tc; fi
    python3 - "$i" "$tc_t" "$full_t" "$one_t" "$none_t" "$changes" <<'PY'
import sys
run, tc, full, one, none, changes = sys.argv[1:]
(tcw, tcc), (fw, fc), (ow, oc), (nw, nc) = [tuple(map(int, x.split())) for x in (tc, full, one, none)]
print(f"run {run}: tc -batch {tcw} ms wall / {tcc} ms cpu | netqos apply from scratch {fw} / {fc} "
      f"(ratio to tc -batch: wall {fw / max(tcw, 1):.2f}, cpu {fc / max(tcc, 1):.2f}) | "
      f"one-class re-apply ({changes} changes) {ow} / {oc} (ratio to full apply: wall {ow / max(fw, 1):.3f}, "
      f"cpu {oc / max(fc, 1):.3f}) | unchanged re-apply {nw} / {nc}")
PY
done
