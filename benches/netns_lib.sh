# Shared by the apply benchmarks (apply_vs_tc.sh, apply_vs_fireqos.sh); source it after
# setting `ns` (the namespace name) and `tmp` (a scratch directory).
#
#   settle            waits until the CPUs have been idle (< 5 % busy) for one second, at
#                     most $SETTLE_MAX s (default 60): a deleted namespace's tc objects
#                     are freed by a kernel worker after `ip netns del` returns
#   fresh             a new namespace "$ns" with a veth eth0 (up), nothing else alive
#   run CMD...        prints "WALL_MS CPU_MS" of the command (CPU = user + system, children
#                     included); fails when the command fails
#   batch_of DIR      the `tc -batch` lines of netqos's compiled script in DIR (root qdisc,
#                     then every class, qdisc and filter): the same tree, sent by tc alone
settle() {
    python3 - <<'PY'
import os, time
limit = float(os.environ.get("SETTLE_MAX", "60"))
def busy():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return sum(v), v[3] + v[4]
quiet, start = 0, time.monotonic()
t0, i0 = busy()
while quiet < 2 and time.monotonic() - start < limit:
    time.sleep(0.5)
    t1, i1 = busy()
    quiet = quiet + 1 if 1 - (i1 - i0) / max(t1 - t0, 1) < 0.05 else 0
    t0, i0 = t1, i1
PY
}
fresh() {
    ip netns del "$ns" 2>/dev/null || true
    settle
    ip netns add "$ns"
    ip -n "$ns" link add eth0 type veth peer name p0
    ip -n "$ns" link set eth0 up
}
run() {
    python3 -c '
import os, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:])
w = time.monotonic() - t
u = os.times()
if r.returncode != 0:
    sys.exit(r.returncode)
print(round(w * 1000, 1), round((u.children_user + u.children_system) * 1000))
' "$@"
}
batch_of() {
    sed -n "s/^        echo '\(qdisc add dev eth0 root handle 1: htb .*\)' >>\"\$batch\"$/\1/p" "$1/netqos-apply.sh" | head -n 1
    sed -n "/^cat >>\"\$batch\" <<'NETQOS_BATCH'$/,/^NETQOS_BATCH$/p" "$1/netqos-apply.sh" | sed '1d;$d'
}
