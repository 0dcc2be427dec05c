#!/usr/bin/env bash
# Regenerates every chart under docs/figures/ from the scenario files, printing the exact
# command behind each. Each chart is one `fedsim run` of a scenario at its default size with
# seed 1 (results in results/reproduce/<scenario>/), whose chart files are copied to
# docs/figures/<figure>.{svg,png}. Runs take from under a second to about two minutes (RQ1).
#
#   scripts/reproduce.sh            # every figure
#   scripts/reproduce.sh rq2 rq12   # only these figures (a name, or its part before a '-')
#
# The binary is FEDSIM_BIN, or target/release/fedsim built with `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
fedsim=${FEDSIM_BIN:-}
if [ -z "$fedsim" ]; then
    cargo build --release --quiet --bin fedsim
    fedsim=target/release/fedsim
fi
mkdir -p docs/figures results/reproduce

# figure name | scenario file | chart file stem the run writes
figures=(
    "rq1-polling-load|scenarios/rq1-polling-load.toml|polling-load"
    "rq2-containment|scenarios/rq2-containment-keys.toml|containment-rotation"
    "rq3-fail-open-window|scenarios/rq3-fail-open-window.toml|containment-compromise-silent"
    "rq5-divergence|scenarios/rq5-divergence.toml|divergence"
    "rq6-link-hours-lost|scenarios/rq6-partitions.toml|link-hours-lost"
    "rq10-lying-server|scenarios/rq10-lying-server.toml|containment-lie"
    "rq11-domain-reuse|scenarios/rq11-domain-reuse.toml|containment-expire-gap-1d"
    "rq12-wakeups|scenarios/rq12-constrained-host.toml|wakeups"
)

# Figures drawn from a sweep (one line per policy, means and 95% CIs over seeds):
# figure name | scenario file | sweep arguments | chart file stem `fedsim plot` writes in charts/
sweep_figures=(
    "rq4-bitrot|scenarios/rq4-bitrot.toml|--param rooms.policy=P0,P1,P7,P5 --seeds 1..3|bitrot"
    "rq9-amplification|scenarios/rq9-amplification.toml|--param rooms.messages_per_room_per_hour=5,10,20,40 --param rooms.policy=P1,P8 --seeds 1..3|amplification_factor"
    "rq8-key-flapping|scenarios/rq8-key-flapping.toml|--seeds 1..3|family.n1000.invalidations_per_h"
    "rq7-requery-storm|scenarios/rq7-requery-storm.toml|--param rooms.rooms=5,10,20,40 --param rooms.policy=P1,P6 --seeds 1..4|storm_peak_gets_per_s"
)

wanted() {
    [ $# -eq 0 ] && return 0
    local figure=$1
    shift
    for prefix in "${selected[@]}"; do
        [[ $figure == "$prefix" || $figure == "$prefix"-* ]] && return 0
    done
    return 1
}
selected=("$@")

made=0
for entry in "${figures[@]}"; do
    IFS='|' read -r figure scenario stem <<<"$entry"
    if [ ${#selected[@]} -gt 0 ] && ! wanted "$figure" "${selected[@]}"; then
        continue
    fi
    out="results/reproduce/$(basename "$scenario" .toml)"
    echo "# docs/figures/$figure.{svg,png}:"
    echo "fedsim run $scenario --seed 1 --out $out && cp $out/$stem.svg docs/figures/$figure.svg && cp $out/$stem.png docs/figures/$figure.png"
    "$fedsim" run "$scenario" --seed 1 --out "$out" >/dev/null 2>"$out.log" || {
        cat "$out.log" >&2
        echo "reproduce: FAILED: $scenario" >&2
        exit 1
    }
    for extension in svg png; do
        cp "$out/$stem.$extension" "docs/figures/$figure.$extension.tmp"
        mv "docs/figures/$figure.$extension.tmp" "docs/figures/$figure.$extension"
    done
    made=$((made + 1))
done
for entry in "${sweep_figures[@]}"; do
    IFS='|' read -r figure scenario sweep_args stem <<<"$entry"
    if [ ${#selected[@]} -gt 0 ] && ! wanted "$figure" "${selected[@]}"; then
        continue
    fi
    out="results/reproduce/$(basename "$scenario" .toml)"
    echo "# docs/figures/$figure.{svg,png}:"
    echo "rm -rf $out && fedsim sweep $scenario $sweep_args --jobs 2 --out $out && fedsim plot $out --metric $stem && cp $out/charts/$stem.svg docs/figures/$figure.svg && cp $out/charts/$stem.png docs/figures/$figure.png"
    rm -rf "$out"
    # shellcheck disable=SC2086 # the sweep arguments are words
    "$fedsim" sweep "$scenario" $sweep_args --jobs 2 --out "$out" --quiet >"$out.log" 2>&1 &&
        "$fedsim" plot "$out" --metric "$stem" >>"$out.log" 2>&1 || {
        cat "$out.log" >&2
        echo "reproduce: FAILED: $scenario" >&2
        exit 1
    }
    for extension in svg png; do
        cp "$out/charts/$stem.$extension" "docs/figures/$figure.$extension.tmp"
        mv "docs/figures/$figure.$extension.tmp" "docs/figures/$figure.$extension"
    done
    made=$((made + 1))
done
echo "reproduce: $made figures written to docs/figures/"
