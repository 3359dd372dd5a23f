"""Prints one line per try: FIDs (with 95 % bootstrap intervals and FID∞) from runs/try_*/evaluate/metrics/metrics.json."""
import glob
import json
import os
import re
import sys


def fmt(row):
    if not row:
        return "-"
    inf = row.get("fid_infinity")
    return (f"{row['fid']:.2f} [{row.get('fid_low', float('nan')):.2f}, {row.get('fid_high', float('nan')):.2f}]"
            f" ∞{inf:.2f}" if inf is not None else f"{row['fid']:.2f}") + f" n={row.get('num_images', row.get('num_samples', '?'))}"


for run in sorted(glob.glob("runs/try_*")) + sys.argv[1:]:
    path = os.path.join(run, "evaluate", "metrics", "metrics.json")
    if not os.path.exists(path):
        continue
    m = json.load(open(path))
    s = m["samplers"]
    history = os.path.join(run, "train", "model", "history.json")
    h = json.load(open(history)) if os.path.exists(history) else {}
    log = f"tries/{os.path.basename(run)[4:]}.log"
    wall = re.findall(r"wall=(\d+)", open(log).read()) if os.path.exists(log) else []
    print(f"{os.path.basename(run)}: steps {h.get('steps')} train {h.get('seconds', 0):.0f}s wall {wall[-1] if wall else '?'}s")
    for name, row in s.items():
        print(f"   {name:>16}: {fmt(row)}")
    print(f"   {'held-out':>16}: {fmt(m.get('real_heldout'))}")
    print(f"   {'gaussian':>16}: {fmt(m.get('baseline_gaussian'))}")
