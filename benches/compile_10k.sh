#!/usr/bin/env bash
# Compiles a 10,000-class policy and applies its script in a fresh network namespace
# through one `tc -batch`, then applies the same objects with one `tc` process per object
# in another namespace, for the ratio. Needs root and iproute2.
# Usage: benches/compile_10k.sh [CLASSES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
cargo build --release --quiet
tmp=$(mktemp -d)
ns1="nqbench-batch-$$"
ns2="nqbench-percmd-$$"
cleanup() { ip netns del "$ns1" 2>/dev/null || true; ip netns del "$ns2" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
python3 benches/gen_policy.py "$n" > "$tmp/p.nq"

best=""
for _ in 1 2 3 4 5; do
    rm -rf "$tmp/out"
    s=$(date +%s%N)
    ./target/release/netqos compile "$tmp/p.nq" -o "$tmp/out" -q
    e=$(date +%s%N)
    ms=$(( (e - s) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
done
echo "compile: classes=$n best_of_5=${best}ms ($(wc -l < "$tmp/out/netqos-apply.sh") script lines)"

# The batch lines, also run one tc process each for comparison.
sed -n "/^cat >>\"\$batch\" <<'NETQOS_BATCH'$/,/^NETQOS_BATCH$/p" "$tmp/out/netqos-apply.sh" | sed '1d;$d' > "$tmp/lines"
objects=$(wc -l < "$tmp/lines")
for ns in "$ns1" "$ns2"; do
    ip netns add "$ns"
    ip -n "$ns" link add eth0 type veth peer name p0
    ip -n "$ns" link set eth0 up
done
s=$(date +%s%N)
ip netns exec "$ns1" sh "$tmp/out/netqos-apply.sh"
e=$(date +%s%N)
batch_ms=$(( (e - s) / 1000000 ))
ip -n "$ns2" link set eth0 up
s=$(date +%s%N)
ip netns exec "$ns2" tc qdisc add dev eth0 root handle 1: htb default 1
ip netns exec "$ns2" sh -c 'while read -r line; do tc $line; done' < "$tmp/lines"
e=$(date +%s%N)
percmd_ms=$(( (e - s) / 1000000 ))
echo "apply: objects=$objects tc_batch_script=${batch_ms}ms per_command=${percmd_ms}ms ratio=$(python3 -c "print(round($percmd_ms / max($batch_ms, 1), 1))")x"
