#!/usr/bin/python3
"""The time between rounds of a finished run, from its RUN_DIR alone.

    /usr/bin/python3 tools/round_gaps.py RUN_DIR [RUN_DIR ...]

For each run: a round's wall time (training seconds at the last epoch's end ÷ rounds), the mean
over rounds of the slowest trainer's compute time, the time between rounds as a fraction of the
round (wall − slowest compute) ÷ wall, and each trainer's mean wait for the new model after its
plan arrived (`model_wait_seconds` in rounds.jsonl). bench/round_overhead prints a finer breakdown
for the default run; this reads any run, for instance a bench's or your own.
"""
import json
import statistics
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    for run_dir in sys.argv[1:]:
        with open(f"{run_dir}/rounds.jsonl") as file:
            rounds = [json.loads(line) for line in file if line.strip()]
        with open(f"{run_dir}/summary.json") as file:
            summary = json.load(file)
        if not rounds or not summary.get("epoch_end_seconds"):
            print(f"{run_dir}: no finished rounds")
            continue
        wall = summary["epoch_end_seconds"][-1] / len(rounds)
        slowest = statistics.mean(max(t["compute_seconds"] for t in r["trainers"] if t["delivered"]) for r in rounds)
        waits = {}
        for record in rounds:
            for trainer in record["trainers"]:
                waits.setdefault(trainer["name"], []).append(trainer.get("model_wait_seconds", 0.0))
        wait_text = ", ".join(f"{name} {1000 * statistics.mean(values):.1f}" for name, values in sorted(waits.items()))
        print(f"{run_dir}: {len(rounds)} rounds of {1000 * wall:.1f} ms, slowest trainer computing {1000 * slowest:.1f} ms: "
              f"time between rounds {(wall - slowest) / wall:.3f} of a round; wait for the model (ms): {wait_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
