#!/usr/bin/env bash
# Measures `netqos check` on generated policies of 1,000 / 10,000 / 20,000 classes.
# Usage: benches/check_10k.sh   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in 1000 10000 20000; do
    python3 benches/gen_policy.py "$n" > "$tmp/p$n.nq"
    ./target/release/netqos check "$tmp/p$n.nq" >/dev/null 2>&1 || { echo "policy $n is not clean" >&2; exit 1; }
    best=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        s=$(date +%s%N)
        ./target/release/netqos check "$tmp/p$n.nq" 2>/dev/null
        e=$(date +%s%N)
        ms=$(( (e - s) / 1000000 ))
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
    done
    size=$(wc -c < "$tmp/p$n.nq")
    rss=$( { /usr/bin/time -f '%M' ./target/release/netqos check "$tmp/p$n.nq" 2>&1 >/dev/null; } 2>&1 | tail -1 || echo "?")
    echo "classes=$n bytes=$size best_of_10=${best}ms max_rss=${rss}KiB"
done
