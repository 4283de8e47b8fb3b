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
ms() { echo $(( ($2 - $1) / 1000000 )); }
fresh() {
    ip netns del "$1" 2>/dev/null || true
    ip netns add "$1"
    ip -n "$1" link add eth0 type veth peer name p0
    ip -n "$1" link set eth0 up
}
echo "objects: $objects (classes, leaf qdiscs and filters of $n tenant classes, plus the root)"
for run in $(seq "$runs"); do
    fresh "$nsa"
    fresh "$nsb"
    s=$(date +%s%N); ip netns exec "$nsa" tc -batch "$tmp/batch"; e=$(date +%s%N)
    tc_ms=$(ms "$s" "$e")
    rm -rf "$tmp/state"
    s=$(date +%s%N); ip netns exec "$nsb" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p.nq"; e=$(date +%s%N)
    full_ms=$(ms "$s" "$e")
    changes=$(ip netns exec "$nsb" "$bin" plan --format json "$tmp/p2.nq" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
    s=$(date +%s%N); ip netns exec "$nsb" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p2.nq"; e=$(date +%s%N)
    one_ms=$(ms "$s" "$e")
    s=$(date +%s%N); ip netns exec "$nsb" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p2.nq"; e=$(date +%s%N)
    none_ms=$(ms "$s" "$e")
    python3 - "$run" "$tc_ms" "$full_ms" "$one_ms" "$none_ms" "$changes" <<'PY'
import sys
run, tc, full, one, none, changes = sys.argv[1:]
tc, full, one, none = int(tc), int(full), int(one), int(none)
print(f"run {run}: tc -batch {tc} ms | netqos apply from scratch {full} ms "
      f"(ratio to tc -batch {full / max(tc, 1):.2f}) | one-class re-apply ({changes} changes) {one} ms "
      f"(ratio to full apply {one / max(full, 1):.3f}) | unchanged re-apply {none} ms")
PY
done
