#!/usr/bin/env bash
# Submits a fedsim sweep to Slurm as an array job (one shard per task) plus a merge job that
# starts when every task has ended.
#
#   scripts/slurm/submit-sweep.sh [-n SHARDS] OUT SCENARIO [fedsim sweep flags...]
#
# e.g. scripts/slurm/submit-sweep.sh -n 8 results/sweeps/rq1 scenarios/rq1.toml \
#          --param policy.recheck=at_expiry,never --seeds 1..20
#
# OUT/shard-I holds shard I; OUT/runs.csv and OUT/runs/ are written by the merge job. Logs go to
# OUT/logs/. Prints "ARRAY_JOB_ID MERGE_JOB_ID" on stdout. Extra sbatch options come from the
# usual SBATCH_* environment variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...);
# the environment (FEDSIM_BIN included) is exported to the jobs. The merge uses `afterany`, so it
# also runs after a failed task and then reports which shard is incomplete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

shards=4
if [ "${1:-}" = "-n" ]; then
    shards=${2:?submit-sweep.sh: -n needs a number}
    shift 2
fi
if ! [[ "$shards" =~ ^[1-9][0-9]*$ ]]; then
    echo "submit-sweep.sh: -n $shards: the shard count must be a whole number ≥ 1" >&2
    exit 2
fi
if [ $# -lt 2 ]; then
    echo "submit-sweep.sh: usage: $0 [-n SHARDS] OUT SCENARIO [fedsim sweep flags...]" >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out/logs"
fedsim=${FEDSIM_BIN:-fedsim}

array_job=$(sbatch --parsable --array="0-$((shards - 1))" \
    --output="$out/logs/sweep-%A_%a.out" \
    "$here/sweep-array.sbatch" "$out" "$@")
array_job=${array_job%%;*}

shard_dirs=()
for ((index = 0; index < shards; index++)); do
    shard_dirs+=("$out/shard-$index")
done
printf -v merge_command '%q ' "$fedsim" merge "$out" "${shard_dirs[@]}"
merge_job=$(sbatch --parsable --job-name=fedsim-merge --cpus-per-task=1 \
    --dependency="afterany:$array_job" \
    --output="$out/logs/merge-%j.out" \
    --wrap="$merge_command")
merge_job=${merge_job%%;*}
echo "$array_job $merge_job"
