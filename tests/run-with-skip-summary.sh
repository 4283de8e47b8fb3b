#!/bin/sh
# Cargo's runner for this package (.cargo/config.toml). A test binary (under deps/) runs
# with NETQOS_SKIP_LOG set; every test that skips appends "test: why" there
# (tests/support.rs `skip`), and after the run the skipped tests are listed, so a local run
# says what it did not exercise. CI never skips: there a missing tool fails its test.
case "$1" in
*/deps/*) ;;
*) exec "$@" ;;
esac
log=$(mktemp "${TMPDIR:-/tmp}/netqos-skips.XXXXXX") || exec "$@"
NETQOS_SKIP_LOG=$log "$@"
rc=$?
if [ -s "$log" ]; then
    n=$(wc -l <"$log" | tr -d ' ')
    {
        printf '\n%s skipped (they pass without checking anything; CI runs them all):\n' \
            "$([ "$n" = 1 ] && echo "1 test" || echo "$n tests")"
        sort "$log" | sed 's/^/  /'
        printf 'Install what they need with the apt/pip/npm part of .ci/run (root for namespaces).\n'
    } >&2
fi
rm -f "$log"
exit "$rc"
