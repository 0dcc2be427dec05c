#!/usr/bin/env bash
# Every scenario file in scenarios/*.toml must pass `fedsim check`
# and run with `--check-determinism` at a reduced size (the --set overrides below; the default
# for an unlisted file is to run it as it is), key world and room world alike. Any failure fails
# the script and prints the command that reproduces it.
# The binary is FEDSIM_BIN or target/release/fedsim (built if needed).
# FEDSIM_RESULTS=DIR keeps every run's result files in DIR (otherwise a temporary directory,
# removed at the end): two binaries' results can then be compared with
#   diff -r -x run-info.json -x '*.log' DIR_A DIR_B
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
fail() { echo "test-scenarios: FAILED: $*" >&2; exit 1; }

fedsim=${FEDSIM_BIN:-}
if [ -z "$fedsim" ]; then
    # The binary users run (`cargo run --release`, fat LTO): built once, then reused by the
    # other scripts and by CI's run of the README main command.
    cargo build --release --bin fedsim --quiet
    fedsim=target/release/fedsim
fi
if [ -n "${FEDSIM_RESULTS:-}" ]; then
    work=$FEDSIM_RESULTS
    mkdir -p "$work"
else
    work=$(mktemp -d /tmp/fedsim-scenarios-test.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi

# The reduced size of each scenario: --set arguments, one per line.
reduced_sets() {
    case "$(basename "$1" .toml)" in
    rq1-polling-load)
        echo "duration=2h"
        for group in 0 1 2; do echo "federation.domain_groups[$group].count=300"; done
        for observer in 0 1 2 3 4 5 6 7; do echo "observers[$observer].known_domains=[100,300]"; done
        ;;
    rq2-containment-keys)
        echo "federation.domain_groups[0].count=50"
        for observer in 0 1 2 3 4 5 6 7 8; do echo "observers[$observer].known_domains=[50]"; done
        ;;
    rq3-fail-open-window) echo "duration=4d" ;;
    rq6-partitions) echo "duration=3d" ;;
    rq8-key-flapping)
        echo "duration=1d"
        echo "federation.domain_groups[0].count=100"
        for observer in 0 1 2 3; do echo "observers[$observer].known_domains=[100]"; done
        ;;
    rq10-lying-server) echo "duration=12h" ;;
    rq9-amplification)
        echo "duration=6h"
        echo "rooms.rooms=4"
        ;;
    bench-medium | bench-federation)
        echo "duration=6h"
        echo "rooms.servers=60"
        echo "rooms.rooms=10"
        echo "rooms.servers_per_room.max=30"
        ;;
    rq11-domain-reuse) echo "duration=9d" ;;
    rq7-requery-storm)
        echo "rooms.servers=12"
        echo "rooms.servers_per_room.min=12"
        echo "rooms.servers_per_room.max=12"
        echo "rooms.rooms=3"
        ;;
    rq4-bitrot)
        # 12 days: the newcomers at 1, 4 and 10 days join; the later join-late actions are
        # moved inside the run.
        echo "duration=12d"
        for action in 3 4 5; do echo "rooms.actions[$action].at=11d"; done
        ;;
    rq12-constrained-host)
        echo "duration=12h"
        for group in 0 1; do echo "federation.domain_groups[$group].count=300"; done
        for observer in 0 1 2 3 4; do echo "observers[$observer].known_domains=[30,300]"; done
        ;;
    esac
}

checked=0
shopt -s nullglob
# (scenarios/repro/*.toml are `fedsim repro` scripts, another format, tested by tests/repro_cli.rs.)
for file in scenarios/*.toml; do
    name=$(basename "$file" .toml)
    sets=()
    while IFS= read -r set; do
        [ -n "$set" ] && sets+=(--set "$set")
    done < <(reduced_sets "$file")
    begin=$SECONDS
    if ! "$fedsim" check "$file" >"$work/$name.check.log" 2>&1; then
        cat "$work/$name.check.log" >&2
        fail "fedsim check $file"
    fi
    command=("$fedsim" run "$file" --seed 1 --out "$work/$name" --check-determinism "${sets[@]}")
    if ! "${command[@]}" >"$work/$name.run.log" 2>&1; then
        cat "$work/$name.run.log" >&2
        fail "${command[*]}"
    fi
    grep -q "determinism check passed" "$work/$name.run.log" || fail "$file: no determinism verdict"
    echo "== scenarios: $file: check + determinism ok ($((SECONDS - begin)) s${sets:+, reduced: ${sets[*]}})"
    checked=$((checked + 1))
done
echo "scenarios: $checked passed ($((SECONDS - started)) s)"
