"""Compare the batch job's outputs with the labels: python score.py WORK_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

work = Path(sys.argv[1])
right = total = 0
for out in sorted((work / "outputs").glob("part-*.npy")):
    n = out.stem.split("-")[1]
    predicted = np.load(out).argmax(axis=1)
    labels = np.load(work / f"labels-{n}.npy")
    right += int((predicted == labels).sum())
    total += len(labels)
    print(f"{out.name}: {len(labels)} rows")
print(f"batch job: {total} rows, {right / total:.1%} correct")
sys.exit(0 if total and right / total >= 0.85 else 1)
