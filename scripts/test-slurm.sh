#!/usr/bin/env bash
# Runs a small fedsim sweep as a Slurm array job on a single-node Slurm cluster brought up on
# this machine, merges the shards, and checks the result is byte-identical to the same sweep run
# on one machine. Then stops everything it started.
#
#   sudo scripts/test-slurm.sh          (needs root: it starts munged, slurmctld and slurmd)
#
# Installs the Debian packages slurmctld, slurmd, slurm-client and munge with apt-get if they are
# missing. The cluster is private to this run: its own munge socket and key directory, free TCP
# ports, state under a temporary directory, slurm.conf written for this host's real CPUs and
# memory (from `slurmd -C`). The sweep is scripts/small-sweep.args; the binary is FEDSIM_BIN or
# target/release/fedsim (built if needed). Set FEDSIM_SLURM_SHARDS to change the array size (3)
# and FEDSIM_KEEP_SLURM=1 to keep the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$SECONDS
shards=${FEDSIM_SLURM_SHARDS:-3}
say() { echo "== slurm: $* ($((SECONDS - started)) s)"; }
fail() { echo "test-slurm: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it starts munged, slurmctld and slurmd)"

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    # Keep the packages' own services from starting (policy-rc.d 101 = "not now"): this script
    # starts private daemons and must leave nothing else running.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    [ "$made_policy" = 1 ] && rm -f "$policy"
fi
id munge >/dev/null 2>&1 || fail "the munge package did not create the munge user"

# 2. The binary and the single-machine reference are built/run while the daemons start.
fedsim=${FEDSIM_BIN:-}
if [ -z "$fedsim" ]; then
    # The binary users run (`cargo run --release`, fat LTO): built once, then reused by the
    # other scripts and by CI's run of the README main command.
    cargo build --release --bin fedsim --quiet
    fedsim=$repo/target/release/fedsim
fi
fedsim=$(realpath "$fedsim")
export FEDSIM_BIN=$fedsim
read -r -a sweep_args <<<"$(grep -v '^[[:space:]]*#' scripts/small-sweep.args | tr '\n' ' ')"

work=$(mktemp -d /tmp/fedsim-slurm.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/state" "$work/spool" "$work/munge" "$work/sweep"
chown munge:munge "$work/munge"
chmod 755 "$work/munge"   # munged wants the socket directory searchable by all
pids=()
jobs_submitted=()
cleanup() {
    local status=$?
    if [ ${#jobs_submitted[@]} -gt 0 ]; then
        scancel "${jobs_submitted[@]}" 2>/dev/null || true
    fi
    # Daemons in reverse start order, each by the PID this script recorded.
    for ((position = ${#pids[@]} - 1; position >= 0; position--)); do
        kill "${pids[$position]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    if [ $status -ne 0 ]; then
        echo "--- slurmctld log (tail)" >&2; tail -n 20 "$work/slurmctld.log" >&2 2>/dev/null || true
        echo "--- slurmd log (tail)" >&2; tail -n 20 "$work/slurmd.log" >&2 2>/dev/null || true
        for log in "$work"/sweep/array/logs/*.out; do
            [ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    if [ "${FEDSIM_KEEP_SLURM:-0}" = 1 ]; then
        echo "test-slurm: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 3. munge, on a private socket (a munged the system may already run is left alone).
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
    key=$work/munge/munge.key
    dd if=/dev/urandom of="$key" bs=128 count=1 status=none
    chown munge:munge "$key"
    chmod 400 "$key"
fi
socket=$work/munge/munge.socket
setpriv --reuid=munge --regid=munge --clear-groups \
    /usr/sbin/munged --foreground --socket="$socket" --key-file="$key" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
    --seed-file="$work/munge/munged.seed" >"$work/munged.stdout" 2>&1 &
pids+=($!)

# 4. slurm.conf for this host: its real CPUs and memory, two free ports.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
host=$(hostname -s)
node_line=$(slurmd -C | head -n 1)
[[ "$node_line" == NodeName=* ]] || fail "slurmd -C printed '$node_line'"
cat > "$work/slurm.conf" <<CONF
ClusterName=fedsimtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=fedsimtest Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/slurm.conf
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || fail "munged did not create $socket"

setsid slurmctld -D -c -f "$SLURM_CONF" >"$work/slurmctld.stdout" 2>&1 &
pids+=($!)
sleep 1
setsid slurmd -D -f "$SLURM_CONF" >"$work/slurmd.stdout" 2>&1 &
pids+=($!)
say "daemons started (node: ${node_line%% UpTime*})"

# 5. The single-machine reference, while the node registers.
"$fedsim" sweep "${sweep_args[@]}" --out "$work/sweep/single" --jobs 2 --quiet
say "single-machine sweep done"

for _ in $(seq 100); do
    [ "$(sinfo -h -o %T 2>/dev/null | head -n 1)" = idle ] && break
    sleep 0.3
done
[ "$(sinfo -h -o %T | head -n 1)" = idle ] || fail "the node did not become idle: $(sinfo 2>&1)"
say "node idle"

# 6. The array job and its dependent merge, as a user would submit them.
read -r array_job merge_job < <(scripts/slurm/submit-sweep.sh -n "$shards" \
    "$work/sweep/array" "${sweep_args[@]}")
[ -n "${merge_job:-}" ] || fail "submit-sweep.sh did not print two job ids"
jobs_submitted=("$array_job" "$merge_job")
say "submitted array job $array_job ($shards tasks) and merge job $merge_job"
deadline=$((SECONDS + 150))
while squeue -h -j "$array_job,$merge_job" 2>/dev/null | grep -q .; do
    [ $SECONDS -lt $deadline ] || fail "jobs still queued after 150 s: $(squeue)"
    sleep 0.5
done
jobs_submitted=()
say "jobs finished"

# 7. Same bytes as one machine.
merged=$work/sweep/array
[ -f "$merged/runs.csv" ] || fail "the merge job wrote no runs.csv (see $merged/logs)"
cmp "$work/sweep/single/runs.csv" "$merged/runs.csv" ||
    fail "runs.csv from the array job differs from the single-machine one"
cmp "$work/sweep/single/sweep.json" "$merged/sweep.json" || fail "sweep.json differs"
diff -r -x run-info.json "$work/sweep/single/runs" "$merged/runs" >/dev/null || fail "run folders differ"
rows=$(($(wc -l <"$merged/runs.csv") - 1))
# Every run was executed by some array task (and none twice).
logged=$(cat "$merged"/logs/sweep-"${array_job}"_*.out | grep -c '^sweep: \[' || true)
[ "$logged" = "$rows" ] || fail "array tasks logged $logged runs, expected $rows"
echo "test-slurm: OK: $rows runs in $shards array tasks, merged runs.csv byte-identical to the" \
    "single-machine sweep ($((SECONDS - started)) s)"
