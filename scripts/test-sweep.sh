#!/usr/bin/env bash
# Checks `fedsim sweep` with the real simulator on the tiny sweep in scripts/small-sweep.args:
#   1. --jobs 1 and --jobs 2 give byte-identical runs.csv and run folders;
#   2. a sweep killed with SIGKILL half-way leaves only complete run folders (plus .partial-*
#      ones), and resuming it gives the same runs.csv and folders as the uninterrupted sweep;
#   3. --shard 0/2 and 1/2 merged with `fedsim merge` give the same again.
# The binary is FEDSIM_BIN or target/release/fedsim (built if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
say() { echo "== sweep: $* ($((SECONDS - started)) s)"; }
fail() { echo "test-sweep: FAILED: $*" >&2; exit 1; }

fedsim=${FEDSIM_BIN:-}
if [ -z "$fedsim" ]; then
    # The binary users run (`cargo run --release`, fat LTO): built once, then reused by the
    # other scripts and by CI's run of the README main command.
    cargo build --release --bin fedsim --quiet
    fedsim=target/release/fedsim
fi
read -r -a sweep_args <<<"$(grep -v '^[[:space:]]*#' scripts/small-sweep.args | tr '\n' ' ')"
work=$(mktemp -d /tmp/fedsim-sweep-test.XXXXXX)
background=
cleanup() {
    if [ -n "$background" ]; then kill "$background" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

same() { # same DIR_A DIR_B WHAT
    cmp "$1/runs.csv" "$2/runs.csv" || fail "$3: runs.csv differs"
    diff -r -x run-info.json "$1/runs" "$2/runs" >/dev/null || fail "$3: run folders differ"
}

"$fedsim" sweep "${sweep_args[@]}" --out "$work/one" --jobs 1 --quiet
"$fedsim" sweep "${sweep_args[@]}" --out "$work/two" --jobs 2 --quiet
same "$work/one" "$work/two" "--jobs 1 vs --jobs 2"
runs=$(($(wc -l <"$work/one/runs.csv") - 1))
say "--jobs 1 and --jobs 2 identical ($runs runs)"

# Kill half-way: wait until about half the runs are complete, then SIGKILL.
"$fedsim" sweep "${sweep_args[@]}" --out "$work/killed" --jobs 1 --quiet &
background=$!
complete() { find "$work/killed/runs" -mindepth 1 -maxdepth 1 -type d ! -name '.partial-*' 2>/dev/null | wc -l; }
while kill -0 "$background" 2>/dev/null && [ "$(complete)" -lt $((runs / 2)) ]; do sleep 0.05; done
if kill -9 "$background" 2>/dev/null; then
    wait "$background" 2>/dev/null || true
    say "killed after $(complete) of $runs runs"
else
    echo "test-sweep: warning: the sweep finished before it could be killed" >&2
fi
background=
# Nothing half-written outside .partial-*: every run folder holds a summary that parses.
for dir in "$work"/killed/runs/*/; do
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))["metrics"]' "$dir/summary.json" ||
        fail "$dir: incomplete run folder after the kill"
done
if [ -f "$work/killed/runs.csv" ]; then
    cmp -s "$work/killed/runs.csv" "$work/one/runs.csv" ||
        fail "a runs.csv exists after the kill but is not the complete one"
fi
"$fedsim" sweep "${sweep_args[@]}" --out "$work/killed" --jobs 2 --quiet
same "$work/one" "$work/killed" "killed and resumed"
ls -a "$work/killed/runs" | grep -q '^\.partial-' && fail "a .partial- folder survived the resume"
say "killed and resumed identical"

for shard in 0/2 1/2; do
    "$fedsim" sweep "${sweep_args[@]}" --out "$work/shard-${shard%/*}" --shard "$shard" --quiet
done
"$fedsim" merge "$work/merged" "$work/shard-1" "$work/shard-0" 2>/dev/null
same "$work/one" "$work/merged" "shards merged"
say "shards merged identical"
echo "test-sweep: OK ($((SECONDS - started)) s)"
