#!/usr/bin/env bash
# Training over slow links, side by side: the same run (3 nodes, each in its own network namespace
# behind a veth whose both ends tc tbf caps to the rate; the coordinator on the host) at each rate
# and in each mode, with a model of GPU-fleet proportions (tools/examples/make_mlp.py: 1.86 M
# parameters, 7.4 MB in fp32) unless --model cnn. Each run is the fault suite's slow-links scenario,
# so it also checks exact epochs and that every process exits cleanly. Needs root (namespaces).
#
#   bench/slow_links.sh [--rates "10000000 100000 10000"] [--modes "gradient local-sgd topk-q8 auto"]
#                       [--train-limit 12000] [--epochs 1] [--model mlp|cnn] [--sync-steps 8]
#                       [--out /tmp/filo-slow-links]
#
# Modes: gradient, local-sgd (dense), topk-q8 (compressed local-sgd), auto, and local-sgd-overlap
# and topk-q8-overlap (the same with optimizer.overlap: a trainer goes on with its next round's
# local steps while its change crosses the link).
# Rates are kbit/s (10000000: 10 Gbit/s, a link that does not bind). Gradient mode sends the whole
# model both ways every round: at 10 Mbit/s and below it is skipped unless --modes names it alone.
# Prints one row per run: training time (and its ratio to the same mode's fastest link), rounds,
# bytes the trainers sent, the bytes each trainer was broadcast (models, or compressed updates), the mean wait for the model after a plan, test accuracy, PASS/FAIL,
# and how the last round was exchanged (auto mode chooses: optimizer.mode = "auto", sync interval 8).
set -euo pipefail
cd "$(dirname "$0")/.."
rates="10000000 100000 10000"
modes="gradient local-sgd topk-q8 auto"
train_limit=12000
epochs=1
model=mlp
out=/tmp/filo-slow-links
explicit_modes=false
sync_steps=8
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) rates=$2; shift 2 ;;
    --modes) modes=$2; explicit_modes=true; shift 2 ;;
    --train-limit) train_limit=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --sync-steps) sync_steps=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/slow_links.sh [--rates R] [--modes M] [--train-limit N] [--epochs N] [--model mlp|cnn] [--sync-steps N] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -x build/filo_faults ] || { echo "slow_links: build/filo_faults is missing: build first" >&2; exit 2; }
mkdir -p "$out"
model_settings=()
if [ "$model" = mlp ]; then
  /usr/bin/python3 tools/examples/make_mlp.py "$out/mlp.pt" >/dev/null
  model_settings=(--set "model.path=$out/mlp.pt")
fi
echo "slow links: 3 nodes, $model, $epochs epoch(s) of $train_limit samples, sync interval $sync_steps; $(nproc) cores, $(date -u +%F)"
printf '%-12s %-17s %10s %7s %7s %12s %12s %11s %9s  %-5s %s\n' link mode training ratio rounds uplink downlink "model wait" accuracy check exchange
declare -A fastest
for rate in $rates; do
  for mode in $modes; do
    if [ "$mode" = gradient ] && [ "$rate" -le 10000 ] && ! $explicit_modes; then continue; fi
    settings=(--set optimizer.mode=local-sgd --set "optimizer.sync_steps=$sync_steps")
    case "$mode" in
      gradient) settings=(--set optimizer.mode=gradient) ;;
      topk-q8) settings+=(--set optimizer.compression=topk-q8) ;;
      local-sgd) ;;
      local-sgd-overlap) settings+=(--set optimizer.overlap=true) ;;
      topk-q8-overlap) settings+=(--set optimizer.compression=topk-q8 --set optimizer.overlap=true) ;;
      auto) settings=(--set optimizer.mode=auto --set "optimizer.sync_steps=$sync_steps") ;;
      *) echo "slow_links: unknown mode $mode" >&2; exit 2 ;;
    esac
    dir="$out/$rate-$mode"
    check=PASS
    build/filo_faults --scenario slow-links --rate-kbit "$rate" --out "$dir" --set "data.train_limit=$train_limit" --set "schedule.epochs=$epochs" \
      "${model_settings[@]}" "${settings[@]}" >"$dir.log" 2>&1 || check=FAIL
    row=$(/usr/bin/python3 - "$dir/slow-links" <<'PY'
import json, statistics, sys
run = sys.argv[1]
summary = json.load(open(f"{run}/summary.json"))
rounds = [json.loads(line) for line in open(f"{run}/rounds.jsonl")]
sent = sum(t.get("tensor_bytes", 0) for r in rounds for t in r["trainers"] if t["delivered"])
waits = [t["model_wait_seconds"] for r in rounds for t in r["trainers"] if t["delivered"]]
wait = statistics.mean(waits) if waits else 0.0
down = summary.get("model_broadcast_bytes", 0)
exchange = summary.get("exchange", "-").replace(" ", "_")
print(f"{summary['training_seconds']:.1f} {summary['rounds']} {sent / 1e6:.2f} {down / 1e6:.2f} {wait:.2f} {summary['final_test_accuracy']} {exchange}")
PY
) || row="0 - - - - - -"
    read -r seconds rounds_count sent down wait accuracy exchange <<<"$row"
    [ -n "${fastest[$mode]:-}" ] || fastest[$mode]=$seconds
    ratio=$(/usr/bin/python3 -c "print(f'{$seconds / ${fastest[$mode]}:.1f}x' if ${fastest[$mode]} > 0 else '-')")
    if [ "$rate" -ge 1000000 ]; then link="$((rate / 1000000)) Gbit/s"; else link="$((rate / 1000)) Mbit/s"; fi
    printf '%-12s %-17s %9ss %7s %7s %9s MB %9s MB %10ss %9s  %-5s %s\n' "$link" "$mode" "$seconds" "$ratio" "$rounds_count" "$sent" "$down" "$wait" "$accuracy" "$check" "$exchange"
  done
done
