#!/usr/bin/env bash
# Runs foley-batch.sbatch for real: starts a one-node Slurm cluster (slurmctld + slurmd on this
# machine, munge auth) in a private folder, submits the script as a 3-task job array over the
# tiny fixture model, and checks that the outputs equal one unsharded `foley batch` run, byte for
# byte, with each job in exactly one shard manifest. Needs root and Debian's slurm-wlm and
# munge (.ci/run installs them); otherwise it says why it was skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
foley=${FOLEY:-${CARGO_TARGET_DIR:-$root/target}/debug/foley}

for tool in slurmctld slurmd sbatch sinfo munged munge; do
  if ! command -v "$tool" >/dev/null; then
    echo "slurm test skipped: $tool is not installed (apt-get install slurm-wlm munge)"; exit 0
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm test skipped: slurmd must run as root"; exit 0
fi
[ -x "$foley" ] || { echo "no foley binary at $foley (build it first)"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! munge -n >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  munged --force
  sleep 1
fi

host=$(hostname -s)
mkdir -p "$work/state" "$work/spool"
cat >"$work/slurm.conf" <<CONF
ClusterName=foleytest
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  [ "$state" = "idle" ] && break
  sleep 1
done
if [ "$state" != "idle" ]; then
  echo "the test cluster did not come up (node state '$state'):"
  tail -5 "$work/slurmctld.log" "$work/slurmd.log" 2>/dev/null || true
  exit 1
fi

model=$root/tests/fixtures/audioldm2-tiny
jobs=$work/jobs.jsonl
{
  echo '{"defaults": {"steps": 2, "prompt": "rain on a tin roof"}}'
  for seed in 0 1 2 3 4 5 6; do echo "{\"name\": \"rain-$seed\", \"seed\": $seed}"; done
  echo '{"name": "wind", "prompt": "wind", "scheduler": "euler-a", "seed": 3}'
} >"$jobs"

# The array: 3 tasks, one CPU and a little memory each, into one shared folder.
FOLEY=$foley sbatch --wait --array=0-2 --cpus-per-task=1 --mem=400M \
  --output="$work/task-%a.log" packaging/cluster/foley-batch.sbatch "$jobs" "$work/slurm-out" "$model" >/dev/null
"$foley" batch "$jobs" --out "$work/whole" --model "$model" --quiet

status=0
for wav in "$work"/whole/*.wav; do
  name=$(basename "$wav")
  cmp -s "$wav" "$work/slurm-out/$name" || { echo "slurm output $name differs from the unsharded run"; status=1; }
done
[ "$(ls "$work"/slurm-out/*.wav | wc -l)" -eq 8 ] || { echo "expected 8 WAVs from the array"; status=1; }
lines=$(cat "$work"/slurm-out/manifest-*-of-3.jsonl | wc -l)
unique=$(cat "$work"/slurm-out/manifest-*-of-3.jsonl | grep -o '"line":[0-9]*' | sort -u | wc -l)
[ "$lines" -eq 8 ] && [ "$unique" -eq 8 ] || { echo "manifests hold $lines lines for $unique jobs, expected 8 and 8"; status=1; }
if [ "$status" -ne 0 ]; then
  tail -n 20 "$work"/task-*.log "$work/slurmd.log" || true
  exit 1
fi
echo "slurm test passed: a 3-task job array equals the unsharded run ($(cd "$work/slurm-out" && echo manifest-*))"
