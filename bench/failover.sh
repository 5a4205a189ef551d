#!/usr/bin/env bash
# A coordinator pair's failover and what the pair costs, side by side in one run of this script.
#
#   bench/failover.sh [--failovers 10] [--pairs 2] [--out /tmp/filo-failover]
#
# 1. Failover: the fault suite's failover scenario with N kills of whichever coordinator is active
#    (each restarted at once, so that it stands by for the next): for each, the time from the last
#    round the old active closed to the first round the new one closed, and the rounds trained
#    again. Prints the median and the worst; the scenario also checks exact epochs and accuracy.
# 2. Cost: the default run (2 nodes, the built-in data and CNN, 3 epochs) with one coordinator and
#    with a pair (primary and standby, both on this machine), alternating, --pairs times each; then
#    build/round_overhead --from reads each run's record: round time and the time between rounds.
#    The replicas are sent by the active's link thread, from the file its checkpoint writer wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
failovers=10
pairs=2
out=/tmp/filo-failover
while [ $# -gt 0 ]; do
  case "$1" in
    --failovers) failovers=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/failover.sh [--failovers N] [--pairs N] [--out DIR]" >&2; exit 2 ;;
  esac
done
for binary in build/filo build/filo_faults build/round_overhead; do
  [ -x "$binary" ] || { echo "failover: $binary is missing: build first" >&2; exit 2; }
done
rm -rf "$out"
mkdir -p "$out"

echo "== failover: $failovers kills of the active coordinator (fault suite, 3 nodes, 4 epochs)"
build/filo_faults --scenario baseline --out "$out/faults" | tail -1
build/filo_faults --scenario failover --failovers "$failovers" --out "$out/faults" \
  --baseline "$out/faults/baseline/summary.json" | head -1
/usr/bin/python3 - "$out/faults/failover/history.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
gaps = [r["seconds_between_their_rounds"] for r in rows if "seconds_between_their_rounds" in r]
lost = [max(0, r["last_round_of_old_active"] - r["resumed_after_round"]) for r in rows if "resumed_after_round" in r and r.get("kind") == "measure"]
if not gaps:
    sys.exit("no failover measured")
print(f"failovers measured: {len(gaps)}")
print(f"old active's last round -> new active's first: median {statistics.median(gaps):.2f} s, max {max(gaps):.2f} s")
print(f"rounds trained again per failover: max {max(lost)}, total {sum(lost)}")
EOF

echo "== cost of a standby: the default run with one coordinator and with a pair, alternating"
keys="$out/keys"
build/filo keys fleet "$keys" >/dev/null
port=$((21000 + (RANDOM % 1000) * 8))
run_cluster() {  # $1: run directory, $2: pair or single
  local dir=$1 kind=$2 a="tcp://127.0.0.1:$port" b="tcp://127.0.0.1:$((port + 4))"
  local common=(--set "security.keys_dir=$keys" --set schedule.min_trainers=2)
  local pids=()
  if [ "$kind" = pair ]; then
    build/filo coordinator --listen "$b" --run-dir "$dir/standby" --standby-for "$a" "${common[@]}" \
      >"$dir.standby.log" 2>&1 &
    pids+=($!)
    sleep 0.3
    build/filo coordinator --listen "$a" --run-dir "$dir" --peer "$b" "${common[@]}" >"$dir.log" 2>&1 &
  else
    build/filo coordinator --listen "$a" --run-dir "$dir" "${common[@]}" >"$dir.log" 2>&1 &
  fi
  local coordinator=$!
  local nodes="$a"
  [ "$kind" = pair ] && nodes="$a,$b"
  for name in node-1 node-2; do
    build/filo node --coordinator "$nodes" --name "$name" "${common[@]}" >"$dir.$name.log" 2>&1 &
    pids+=($!)
  done
  wait "$coordinator"
  for pid in "${pids[@]}"; do wait "$pid"; done
  if [ "$kind" = pair ]; then grep -h "replicas sent" "$dir.log" || true; fi
}
dirs_single=()
dirs_pair=()
for i in $(seq 1 "$pairs"); do
  run_cluster "$out/single-$i" single
  dirs_single+=("$out/single-$i")
  run_cluster "$out/pair-$i" pair
  dirs_pair+=("$out/pair-$i")
done
echo "-- one coordinator:"
build/round_overhead --from "${dirs_single[@]}"
echo "-- a pair (the primary's record):"
build/round_overhead --from "${dirs_pair[@]}"
