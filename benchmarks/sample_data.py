"""A small real sample of the shared data for smoke runs: fast to build, with every split populated."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_gap_sample(source: Path, path: Path) -> Path:
    """200 real rows of at most 16 atoms: 60 with an HSE gap (40 of them above 0.1 eV), 140 PBE only."""
    gapped, metals, without = [], [], []
    with gzip.open(source, "rt") as rows:
        for line in rows:
            row = json.loads(line)
            if row["natoms"] > 16:
                continue
            if row["gap_hse"] is None:
                if len(without) < 140:
                    without.append(line)
            elif row["gap_hse"] > 0.1:
                if len(gapped) < 40:
                    gapped.append(line)
            elif len(metals) < 20:
                metals.append(line)
            if len(gapped) + len(metals) + len(without) == 200:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as out:
        out.writelines(gapped + metals + without)
    return path
