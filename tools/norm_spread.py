#!/usr/bin/python3
"""How far honest contributions' norms stray from the median the norm bound compares them with.

    /usr/bin/python3 tools/norm_spread.py RUN_DIR [RUN_DIR ...]

For each run, from its rounds.jsonl: every delivered contribution's norm per sample divided by the
median of its round's delivered norms and the fleet's 16 before them (the bound's reference, as in
actors/norm_bound.cpp, once 3 norms are known), the smallest and largest such ratio, and how many
contributions the bound refused. `robust.norm_factor` (8) should sit well outside an honest run's
spread. (`robust.bound = "off"` skips measuring the norms, so such a run has none to read.)
"""
import json
import statistics
import sys

kFleetWindow = 16
kMinNorms = 3


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    for run_dir in sys.argv[1:]:
        with open(f"{run_dir}/rounds.jsonl") as lines:
            rounds = [json.loads(line) for line in lines]
        window, ratios, refused = [], [], 0
        for record in rounds:
            norms = [t.get("norm_per_sample", 0.0) for t in record["trainers"] if t["delivered"]]
            norms = [norm for norm in norms if norm > 0]
            refused += sum(1 for t in record["trainers"] if t.get("missed_reason", "").startswith("norm bound"))
            reference = window + norms
            if len(reference) >= kMinNorms:
                median = statistics.median(reference)
                ratios += [norm / median for norm in norms if median > 0]
            window = reference[-kFleetWindow:]
        if not ratios:
            print(f"{run_dir}: {len(rounds)} rounds, no norms recorded (robust.bound off, or an older filo)")
            continue
        print(f"{run_dir}: {len(rounds)} rounds, {len(ratios)} contributions: norm / median "
              f"{min(ratios):.2f} to {max(ratios):.2f}; refused by the norm bound: {refused}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
