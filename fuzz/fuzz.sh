#!/usr/bin/env bash
# Builds and runs the libFuzzer targets on the STABLE toolchain (no nightly, no cargo-fuzz):
# libfuzzer-sys compiles libFuzzer itself; rustc adds SanitizerCoverage through LLVM flags
# (the ones cargo-fuzz passes with `--sanitizer none`). See fuzz/README.md.
#
#   fuzz/fuzz.sh build                 # the targets (policy, policy_core, parse_diff, conflist), release + debug assertions
#   fuzz/fuzz.sh seeds                 # fuzz/corpus/{policy,conflist} from the repo's files
#   fuzz/fuzz.sh run TARGET [ARGS...]  # niced libFuzzer run with the target's dictionary
#
# e.g. `fuzz/fuzz.sh run policy -max_total_time=600 -jobs=2 -workers=2`.
set -euo pipefail
cd "$(dirname "$0")"
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
)
bin() { echo "target/$triple/release/$1"; }
case "${1:-}" in
build)
    # --target keeps the flags off build scripts and proc macros.
    RUSTFLAGS="${flags[*]}" nice -n 10 cargo build --release --locked --target "$triple" --bins
    ;;
seeds)
    rm -rf corpus/policy corpus/conflist
    mkdir -p corpus/policy corpus/conflist
    i=0
    while IFS= read -r f; do
        cp "$f" "corpus/policy/seed-$i.nq"
        i=$((i + 1))
    done < <(find ../examples ../tests/fixtures -name '*.nq' | sort)
    # The conflist target reads a mode byte first (bit 0: the policy sets limits; bit 1: also
    # compute the artefacts, for the pods block bits 2-3 pick: fuzz/src/invariants.rs).
    i=0
    while IFS= read -r f; do
        for mode in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do
            { printf "\\x3$mode"; cat "$f"; } > "corpus/conflist/seed-$i-$mode.json"
        done
        i=$((i + 1))
    done < <(find ../tests/fixtures/conflists /work/shared/fixtures/conflists \
        -name '*.conf*' 2>/dev/null | sort)
    echo "seeds: $(ls corpus/policy | wc -l) policies, $(ls corpus/conflist | wc -l) conflists"
    ;;
run)
    target=$2
    shift 2
    dict=netqos.dict
    [ "$target" = conflist ] && dict=conflist.dict
    corpus=corpus/$target
    # policy_core and parse_diff read policies too: they share the policy corpus.
    [ "$target" = policy_core ] && corpus=corpus/policy
    [ "$target" = parse_diff ] && corpus=corpus/policy
    mkdir -p "$corpus" "artifacts/$target"
    exec nice -n 10 "$(bin "$target")" "$corpus" "-dict=$dict" \
        "-artifact_prefix=artifacts/$target/" -max_len=8192 "$@"
    ;;
*)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
