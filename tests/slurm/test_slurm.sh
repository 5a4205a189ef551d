#!/usr/bin/env bash
# The SLURM script on a real single-machine SLURM: slurmctld, slurmd and munged started here
# with a configuration written under OUT (nothing in /etc is touched). The job runs a coordinator
# pair (FILO_STANDBY=1: the standby beside the primary on this one node) and trains; the primary is
# killed and the standby takes over; the job gets the signal SLURM sends before a time limit,
# requeues itself, both coordinators start again, the standby (holding the newer checkpoint)
# resumes, and the run finishes with every epoch's samples exact. Exits 77 (skipped) where SLURM
# cannot start.
#
#   tests/slurm/test_slurm.sh FILO_BINARY REPO_ROOT OUT
set -uo pipefail
filo=$1 repo=$2 out=$3
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; show_logs; exit 1; }
show_logs() {
  for log in "$out"/log/*.log "$out"/job-*.out "$run_dir"/logs/coordinator.log "$run_dir"/logs/standby.log; do
    [ -f "$log" ] && { echo "--- $log (end)"; tail -n 25 "$log"; }
  done
}

[ "$(id -u)" -eq 0 ] || skip "slurmd and munged need root here"
for tool in slurmctld slurmd sbatch scontrol squeue sinfo scancel munged; do
  command -v "$tool" >/dev/null || skip "$tool is missing (tools/setup.sh --tests installs slurm-wlm and munge)"
done

rm -rf "$out"
mkdir -p "$out"/{state,spool,log,munge}
chmod 711 "$out/munge"  # munged wants its socket's directory searchable by all
run_dir="$out/run"
host=$(hostname -s)
cpus=$(nproc)
# Ports of our own, so that a SLURM already on this machine is not disturbed.
ctld_port=$((20000 + RANDOM % 20000))
slurmd_port=$((ctld_port + 1))

pids=()
cleanup() {
  scancel --full "${job:-0}" >/dev/null 2>&1
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 1
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
}
trap cleanup EXIT

dd if=/dev/urandom of="$out/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$out/munge/munge.key"
munged --force --foreground --socket="$out/munge/socket" --key-file="$out/munge/munge.key" \
  --pid-file="$out/munge/munged.pid" --seed-file="$out/munge/seed" >"$out/log/munged.log" 2>&1 &
pids+=($!)

export SLURM_CONF="$out/slurm.conf"
cat >"$SLURM_CONF" <<CONF
ClusterName=filotest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$out/munge/socket
StateSaveLocation=$out/state
SlurmdSpoolDir=$out/spool
SlurmctldPidFile=$out/slurmctld.pid
SlurmdPidFile=$out/slurmd.pid
SlurmctldLogFile=$out/log/slurmctld.log
SlurmdLogFile=$out/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
KillWait=15
JobRequeue=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

for _ in $(seq 50); do [ -S "$out/munge/socket" ] && break; sleep 0.1; done
[ -S "$out/munge/socket" ] || skip "munged did not start: $(tail -n 5 "$out/log/munged.log" 2>/dev/null)"
slurmctld -D -i -f "$SLURM_CONF" >"$out/log/slurmctld.stdout" 2>&1 &
pids+=($!)
slurmd -D -N "$host" -f "$SLURM_CONF" >"$out/log/slurmd.stdout" 2>&1 &
pids+=($!)
ready=""
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null | head -n 1)
  case "$state" in idle*|mix*|alloc*) ready=1; break ;; esac
  sleep 0.5
done
if [ -z "$ready" ]; then
  echo "slurmctld log:"; tail -n 15 "$out/log/slurmctld.log" "$out/log/slurmctld.stdout" 2>/dev/null
  echo "slurmd log:"; tail -n 15 "$out/log/slurmd.log" "$out/log/slurmd.stdout" 2>/dev/null
  skip "SLURM did not bring node $host up within 30 s (state '${state:-none}')"
fi
echo "SLURM up: node $host idle, slurmctld on port $ctld_port"

# A small run: 2 CPU trainers, 2 epochs of 12000 samples, slowed down so that the signal arrives mid-run.
epoch_samples=12000
export FILO="$filo" FILO_RUN_DIR="$run_dir" FILO_DEVICE=cpu FILO_TRAINERS_PER_NODE=2 FILO_STANDBY=1
export FILO_PORT=$((slurmd_port + 1 + RANDOM % 1000))
export FILO_ARGS="--set data.train_limit=$epoch_samples --set data.test_limit=1000 --set schedule.min_trainers=2"
export FILO_COORDINATOR_ARGS="--epochs 2"
export FILO_NODE_ARGS="--set node.slowdown=2"
cd "$out" || exit 1
job=$(sbatch --parsable --nodes=1 --output="$out/job-%j.out" "$repo/tools/slurm/filo.sbatch") || fail "sbatch refused the job"
echo "submitted job $job"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" && return 0; sleep 0.2; done
  fail "waited ${seconds} s for $what"
}
rounds() { [ -f "$run_dir/rounds.jsonl" ] && wc -l <"$run_dir/rounds.jsonl" || echo 0; }
has_rounds() { [ "$(rounds)" -ge "$1" ]; }
wait_for 120 "the first 15 rounds" has_rounds 15
primary_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$run_dir/coordinator.json")
echo "job $job trained $(rounds) rounds; killing the primary coordinator (pid $primary_pid)"
kill -9 "$primary_pid" || fail "could not kill the primary coordinator"
standby_rounds() { [ -f "$run_dir/standby/rounds.jsonl" ] && wc -l <"$run_dir/standby/rounds.jsonl" || echo 0; }
took_over() { [ -f "$run_dir/standby/coordinator.json" ] && [ "$(standby_rounds)" -ge $(($(rounds) + 10)) ]; }
wait_for 60 "the standby to take over and close 10 rounds" took_over
before=$(standby_rounds)
echo "job $job: the standby took over and holds $before rounds; sending the signal SLURM sends before a time limit (USR1)"
scancel --batch --signal=USR1 "$job" || fail "scancel could not signal the job"

job_state() { scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
restarts() { scontrol show job "$job" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2; }
requeued() { [ "$(restarts)" -ge 1 ] 2>/dev/null; }
wait_for 60 "the job to be requeued" requeued
coordinator_stopped() { grep -q "exited with" "$out/job-$job.out" 2>/dev/null; }
# A requeued job waits out a begin time; this test does not need to, but it waits 2 s: slurmd
# refuses a launch whose credential is from the same second as the requeue's revocation ("Job
# credential revoked", and the job fails; seen once on this VM under load, 2026-12-05).
sleep 2
for _ in $(seq 60); do
  [ "$(job_state)" = PENDING ] && scontrol update JobId="$job" StartTime=now >/dev/null 2>&1
  [ "$(job_state)" = RUNNING ] && break
  sleep 0.5
done
finished() { [ -f "$run_dir/standby/summary.json" ] && [ "$(job_state)" = COMPLETED ]; }
wait_for 240 "the requeued job to finish" finished

echo "--- job output"; cat "$out/job-$job.out"
python3 - "$run_dir" "$epoch_samples" <<'PY' || fail "the finished run is not right"
import json, sys
run_dir, epoch_samples = sys.argv[1], int(sys.argv[2])
# The run ended on the standby, which resumed it after the requeue from its own newer checkpoint.
summary = json.load(open(run_dir + "/standby/summary.json"))
coordinator = json.load(open(run_dir + "/standby/coordinator.json"))
print("samples per epoch", summary["samples_per_epoch"], "coordinator starts", summary["coordinator_starts"],
      "resumed after round", coordinator["resumed_after_round"], "failovers", len(summary["failovers"]),
      "accuracy", summary["final_test_accuracy"])
assert summary["samples_per_epoch"] == [epoch_samples, epoch_samples], summary["samples_per_epoch"]
assert summary["coordinator_starts"] >= 3, "the standby's takeover and the requeued job's resume"
assert len(summary["failovers"]) == 1, summary["failovers"]
assert coordinator["resumed_after_round"] > 0, "it started over instead of resuming"
assert summary["final_test_accuracy"] > 0.5
PY
grep -q "start 2" "$out/job-$job.out" || fail "the job did not start a second time"
grep -q "the run ended on the standby" "$out/job-$job.out" || fail "the job did not say where the run ended"
# The standby resumed by the rule for two coordinators started together (the primary then either
# heard it passive and holding more, or already active: either way it stood by).
grep -q "this one resumes it" "$run_dir/logs/standby.log" ||
  fail "the restarted standby did not resume the run from its newer checkpoint"
grep -qE "this one stands by|this coordinator stays passive" "$run_dir/logs/coordinator.log" ||
  fail "the restarted primary did not stand by"
grep -q "time limit near" "$out/job-$job.out" || fail "the job did not see the time-limit signal"
echo "1 passed, 0 failed"
