#!/bin/sh
# Check and compile time and peak RSS of generated policies at 1k / 10k / 100k classes
# (two interfaces of N/2 leaves in groups of 100, valid) and the invalid 102,002-class
# case (one interface: NQ004 and NQ010), then `check` of each 10 MB adversarial policy of
# benches/gen_adversarial.py, with the release build. Times are wall and user CPU seconds.
# Usage: benches/scale.sh [NETQOS_BINARY]   (default target/release/netqos)
set -eu
bin=${1:-target/release/netqos}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
here=$(dirname "$0")
measure() { # label, command...
    label=$1; shift
    /usr/bin/time -f "%e %U %M" -o "$dir/t" "$@" >/dev/null 2>&1 || true
    read -r secs user kb <<EOT
$(tail -n 1 "$dir/t")
EOT
    printf '%-28s %8s s %8s s user %8s MB\n' "$label" "$secs" "$user" "$((kb / 1024))"
}
for n in 1000 10000 100000; do
    python3 "$here/gen_policy.py" --interfaces 2 "$n" >"$dir/p$n.nq"
    measure "check $n" "$bin" check "$dir/p$n.nq"
    measure "compile $n" "$bin" compile "$dir/p$n.nq" -o "$dir/out$n"
done
python3 "$here/gen_policy.py" 100000 >"$dir/bad.nq"
measure "check invalid 102002 (<=60s)" timeout 60 "$bin" check "$dir/bad.nq"
for kind in invalid dups defaults deep longline unknown badvalues comments syntaxerr; do
    python3 "$here/gen_adversarial.py" "$kind" >"$dir/adv.nq"
    measure "check 10MB $kind (<=60s)" timeout 60 "$bin" check "$dir/adv.nq"
done
