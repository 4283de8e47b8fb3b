#!/usr/bin/env bash
# Apply time side by side (issue 16): one policy of N host classes (benches/gen_policy.py:
# groups of 100 hosts, each host class matching its /32, each group its /24) installed from
# scratch, each way in a fresh network namespace (veth eth0, nothing else alive, CPUs
# settled first), all four measured in the same run:
#
#   tc -batch        the tree's objects sent by tc alone (the floor)
#   script           netqos's compiled apply script (`compile --emit tc`: checks, one tc -batch)
#   netqos apply     the live apply over netlink (parse, check, read, journal, send, verify)
#   fireqos          Debian's FireQOS 3.1.x, `fireqos start` with the same tree as a FireQOS
#                    config (gen_policy.py --fireqos), inside `ip netns exec`: FireQOS takes
#                    the device named in its `interface` line (eth0 of the namespace) and runs
#                    one `tc` per object; its state directory /run/fireqos is a private tmpfs
#                    (ip netns exec gives the command its own mount namespace) so nothing is
#                    shared with the host. Leaves are bfifo on both sides (FireQOS's default,
#                    fq_codel, falls back to sfq when modprobe fails; the kernel here has only
#                    the fifos).
#
# Prints each way's wall and CPU time, the classes each left in the kernel (the trees must
# agree) and the ratios to tc -batch. FireQOS is stopped after FIREQOS_TIMEOUT seconds
# (default 900) and the timeout is reported.
#
# Needs root, iproute2 and fireqos (apt-get install fireqos).
# Usage: benches/apply_vs_fireqos.sh [RUNS] [CLASSES...] (default: 1 run at 100 1000 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 10000)
fq_timeout=${FIREQOS_TIMEOUT:-900}
command -v fireqos >/dev/null || { echo "fireqos not found: apt-get install fireqos" >&2; exit 2; }
cargo build --release --quiet
bin=$PWD/target/release/netqos
tmp=$(mktemp -d)
ns="nqfireqos-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
. benches/netns_lib.sh
classes() { ip netns exec "$ns" tc class show dev eth0 | wc -l; }
# way NAME: installs the tree the NAME way into the fresh namespace; prints "WALL CPU".
way() {
    case $1 in
    tc) run ip netns exec "$ns" tc -batch "$tmp/batch" ;;
    script)
        run ip netns exec "$ns" env NETQOS_RUN_DIR="$tmp/run" \
            sh -c 'exec sh "$1" >/dev/null' sh "$tmp/out/netqos-apply.sh"
        ;;
    apply)
        rm -rf "$tmp/state"
        run ip netns exec "$ns" "$bin" apply -q --state-dir "$tmp/state" "$tmp/p.nq"
        ;;
    fireqos)
        run timeout -k 10 "$fq_timeout" ip netns exec "$ns" sh -c \
            'mkdir -p /run/fireqos && mount -t tmpfs fireqos /run/fireqos && exec fireqos start "$1" >"$2" 2>&1' \
            sh "$tmp/fireqos.conf" "$tmp/fireqos.log"
        ;;
    esac
}
for n in "${sizes[@]}"; do
    python3 benches/gen_policy.py "$n" > "$tmp/p.nq"
    { echo "FIREQOS_DEFAULT_QDISC=bfifo"; python3 benches/gen_policy.py --fireqos "$n"; } > "$tmp/fireqos.conf"
    rm -rf "$tmp/out"
    "$bin" compile "$tmp/p.nq" -o "$tmp/out" --emit tc -q
    batch_of "$tmp/out" > "$tmp/batch"
    echo "== $n host classes: $(wc -l < "$tmp/batch") tc objects"
    for i in $(seq "$runs"); do
        ways=(tc script apply fireqos)
        [ $((i % 2)) -eq 0 ] && ways=(fireqos apply script tc)
        declare -A t=()
        for w in "${ways[@]}"; do
            fresh
            if t[$w]=$(way "$w"); then
                echo "run $i: $w ${t[$w]% *} ms wall, ${t[$w]#* } ms cpu, $(classes) classes"
            else
                t[$w]=timeout
                echo "run $i: $w failed or timed out after ${fq_timeout} s ($(classes) classes so far)"
            fi
        done
        python3 -c '
import sys
tc = float(sys.argv[1].split()[0])
out = []
for name, v in zip(("script", "netqos apply", "fireqos"), sys.argv[2:]):
    out.append(f"{name} {float(v.split()[0]) / tc:.2f}x" if v != "timeout" else f"{name} timeout")
print("ratios to tc -batch (wall): " + ", ".join(out))' "${t[tc]}" "${t[script]}" "${t[apply]}" "${t[fireqos]}"
        unset t
    done
done
