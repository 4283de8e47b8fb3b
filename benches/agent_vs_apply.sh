#!/usr/bin/env bash
# The agent's one-class re-apply against `netqos apply`'s, on the policy of
# benches/gen_policy.py (N tenant classes), in a fresh network namespace (veth eth0):
#   (a) `netqos apply` of a one-class rate change (wall time of the whole process, which
#       re-reads the ~3N kernel objects and re-checks the policy), RUNS times alternating
#       the two versions;
#   (b) the agent (started on the same tree) re-applying the same edit when the file is
#       renamed over: the time it reports for reading and checking the policy, and for the
#       re-apply itself (diff against the mirror, record, send, verify from the event
#       stream, state files);
#   (c) the agent repairing a one-class drift (`tc class change` by hand): from the event
#       to the verified repair (`netqos_last_repair_seconds`);
#   (d) the idle agent: CPU over 30 s and resident memory;
#   (e) with strace installed, the fsync/fdatasync/syncfs calls of two more edits (traced,
#       so not timed).
# With NETQOS_TIMINGS=1 the agent's transaction phases are printed too.
# Needs root and iproute2. Usage: benches/agent_vs_apply.sh [CLASSES] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
runs=${2:-5}
cargo build --release --quiet
bin=$PWD/target/release/netqos
tmp=$(mktemp -d)
ns="nqbench-agent-$$"
# BENCH_STATE_DIR: where the state directory goes (default: beside the policy, on disk;
# a tmpfs such as /dev/shm shows the cost without the fsyncs).
state="${BENCH_STATE_DIR:-$tmp}/nqbench-state-$$"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp" "$state"
}
trap cleanup EXIT
python3 benches/gen_policy.py "$n" > "$tmp/p.nq"
python3 - "$tmp/p.nq" "$tmp/p2.nq" <<'PY'
import sys
s = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(s.replace("rate 800kbit", "rate 900kbit", 1))
PY
ip netns add "$ns"
ip -n "$ns" link add eth0 type veth peer name p0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up
cp "$tmp/p.nq" "$tmp/policy.nq"
ip netns exec "$ns" "$bin" apply -q --state-dir "$state" "$tmp/policy.nq"
ms() { python3 -c 'import time; print(time.monotonic_ns() // 1000000)'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
apply_times=()
for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then src=p2; else src=p; fi
    cp "$tmp/$src.nq" "$tmp/policy.nq"
    t0=$(ms)
    ip netns exec "$ns" "$bin" apply -q --state-dir "$state" "$tmp/policy.nq"
    t1=$(ms)
    apply_times+=($((t1 - t0)))
done
# The tree now holds the last version applied; the agent starts on it (nothing to change).
log="$tmp/agent.log"
ip netns exec "$ns" "$bin" agent --state-dir "$state" "$tmp/policy.nq" 2>"$log" &
agent_pid=$!
for _ in $(seq 1 600); do
    grep -q "enforcing policy" "$log" && break
    sleep 0.1
done
grep -q "enforcing policy" "$log" || { cat "$log"; echo "the agent did not start" >&2; exit 1; }
sleep 2
# One edit: the file renamed over, then wait for the agent's "applied" line.
edit() {
    cp "$tmp/$1.nq" "$tmp/next.nq"
    before=$(grep "policy file changed" "$log" | grep -c "): applied" || true)
    mv "$tmp/next.nq" "$tmp/policy.nq"
    for _ in $(seq 1 300); do
        now=$(grep "policy file changed" "$log" | grep -c "): applied" || true)
        [ "$now" -gt "$before" ] && break
        sleep 0.05
    done
    sleep 0.5
}
for i in $(seq 1 "$runs"); do
    if [ $(((runs + i) % 2)) = 1 ]; then edit p2; else edit p; fi
done
# One class changed by hand, repaired by the agent (RUNS times).
cls=$(ip netns exec "$ns" tc class show dev eth0 | awk '!f && /rate 800Kbit|rate 900Kbit/ {print $3; f=1}')
repair=()
for i in $(seq 1 "$runs"); do
    ip netns exec "$ns" tc class change dev eth0 classid "$cls" htb rate 1mbit
    for _ in $(seq 1 100); do
        c=$(grep -c "drift repaired" "$log" || true)
        [ "$c" -ge "$i" ] && break
        sleep 0.05
    done
    sleep 0.5
done
# Idle: CPU (utime + stime) over 30 s, and RSS.
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
c0=$(cpu)
sleep 30
c1=$(cpu)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$agent_pid/status")
echo "classes: $n; runs: $runs"
echo "netqos apply, one-class change (wall ms): ${apply_times[*]} → median $(printf '%s\n' "${apply_times[@]}" | median)"
grep "policy file changed" "$log" | sed -n 's/.*checked in \([0-9.]*\) ms): applied \([0-9]*\) change(s) in \([0-9.]*\) ms.*/\1 \3 \2/p' > "$tmp/edits"
echo "agent, one-class edit: check ms: $(cut -d' ' -f1 "$tmp/edits" | tr '\n' ' ')→ median $(cut -d' ' -f1 "$tmp/edits" | median)"
echo "agent, one-class edit: re-apply ms (changes): $(awk '{printf "%s(%s) ", $2, $3}' "$tmp/edits")→ median $(cut -d' ' -f2 "$tmp/edits" | median)"
grep "now enforcing policy" "$log" | sed -n 's/.*, \([0-9.]*\) ms after the file changed.*/\1/p' > "$tmp/e2e"
echo "agent, one-class edit: file renamed over → verified, ms: $(tr '\n' ' ' < "$tmp/e2e")→ median $(median < "$tmp/e2e")"
grep "drift repaired" "$log" | sed -n 's/.*repaired \([0-9.]*\) ms after.*/\1/p' > "$tmp/repairs"
echo "agent, one-class drift, event to verified repair ms: $(tr '\n' ' ' < "$tmp/repairs")→ median $(median < "$tmp/repairs")"
if [ -n "${NETQOS_TIMINGS:-}" ]; then
    echo "agent transaction phases of the edits and repairs (NETQOS_TIMINGS):"
    awk '/timing/ && started {print "  " $0} /enforcing policy/ {started=1}' "$log"
fi
echo "agent idle: $(python3 -c "print(round(100 * ($c1 - $c0) / $ticks / 30, 2))") % of one CPU over 30 s; RSS $((rss / 1024)) MiB"
# fsyncs per one-class re-apply: strace attached for two more edits, after everything
# above (tracing slows the agent; these edits are not in the figures).
if command -v strace >/dev/null; then
    strace -f -p "$agent_pid" -e trace=fsync,fdatasync,syncfs -o "$tmp/strace" 2>/dev/null &
    strace_pid=$!
    sleep 1
    edit p2
    edit p
    kill -INT "$strace_pid" 2>/dev/null || true
    wait "$strace_pid" 2>/dev/null || true
    grep -E '(fsync|fdatasync|syncfs)\(' "$tmp/strace" | grep -v resumed | sed -E 's/^[0-9]+ +//; s/\(.*//' > "$tmp/syncs" || true
    echo "agent, fsync-family calls over 2 one-class re-applies (strace): $(wc -l < "$tmp/syncs") ($(sort "$tmp/syncs" | uniq -c | tr -s ' ' | tr '\n' ';'))"
else
    echo "agent, fsync-family calls: strace not installed"
fi
