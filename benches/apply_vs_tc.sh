#!/usr/bin/env bash
# A full `netqos apply` from scratch against `tc -batch` of the same objects, in pairs, at
# several sizes: for each size, RUNS pairs, each side in a fresh network namespace (veth
# eth0) with no other tree alive, alternating which side goes first, and the kernel settled
# (CPUs idle) before each measurement. Prints every pair and, per size, the median of the
# per-pair ratios netqos / tc (wall time and CPU time).
#
# The whole netqos command is timed: parse and check the policy, read the kernel, write the
# snapshot, journal and send every object, read everything back to verify it, record the
# outcome. `tc -batch` only sends.
#
# Needs root and iproute2. Usage: benches/apply_vs_tc.sh [RUNS] [CLASSES...]
# (default: 8 pairs at 1000 and 3000 classes).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-8}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 3000)
cargo build --release --quiet
bin=$PWD/target/release/netqos
tmp=$(mktemp -d)
ns="nqpair-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
. benches/netns_lib.sh
for n in "${sizes[@]}"; do
    python3 benches/gen_policy.py "$n" > "$tmp/p.nq"
    rm -rf "$tmp/out"
    "$bin" compile "$tmp/p.nq" -o "$tmp/out" --emit tc -q
    batch_of "$tmp/out" > "$tmp/batch"
    echo "== $n classes: $(wc -l < "$tmp/batch") objects"
    ratios=()
    for i in $(seq "$runs"); do
        order=(tc nq)
        [ $((i % 2)) -eq 0 ] && order=(nq tc)
        for who in "${order[@]}"; do
            fresh
            if [ "$who" = tc ]; then
                tc_t=$(run ip netns exec "$ns" tc -batch "$tmp/batch")
            else
                rm -rf "$tmp/state"
                nq_t=$(run ip netns exec "$ns" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p.nq")
            fi
        done
        r=$(python3 -c 'import sys; a, b = (list(map(float, x.split())) for x in sys.argv[1:]); print(f"{b[0] / a[0]:.3f} {b[1] / max(a[1], 1):.3f}")' "$tc_t" "$nq_t")
        ratios+=("$r")
        echo "pair $i (${order[0]} first): tc -batch ${tc_t% *} ms wall / ${tc_t#* } ms cpu | netqos apply ${nq_t% *} / ${nq_t#* } | ratio wall ${r% *}, cpu ${r#* }"
    done
    printf '%s\n' "${ratios[@]}" | python3 -c '
import statistics, sys
w, c = zip(*(map(float, l.split()) for l in sys.stdin))
print(f"median ratio netqos / tc -batch: wall {statistics.median(w):.3f} (range {min(w):.2f}-{max(w):.2f}), "
      f"cpu {statistics.median(c):.3f} (range {min(c):.2f}-{max(c):.2f}); netqos faster in {sum(x < 1 for x in w)} of {len(w)} pairs")'
done
ip netns del "$ns" 2>/dev/null || true
