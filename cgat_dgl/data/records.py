"""The common record every reader yields, and the errors and report of a load.

A record keeps its structure in the form it was read (CIF text, a pymatgen dict or a Structure)
and parses it only when a graph must be built, so that a warm graph cache never parses a CIF.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pymatgen.core import Structure

from cgat_dgl.data.p1_cif import parse_p1_cif

PayloadKind = Literal["cif", "structure_dict", "structure"]


class DataError(ValueError):
    """Bad input, with the reason (a short key used for counting) and where it was found."""

    def __init__(self, reason: str, source: str, detail: str = "") -> None:
        self.reason = reason
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: {reason}" + (f": {detail}" if detail else ""))


@dataclass
class MaterialRecord:
    id: str
    source: str  # "file:line" or "file" or "file#entry-index": where a message should point
    targets: dict[str, float]
    payload: Any  # CIF text, Structure.as_dict() output, or a Structure
    kind: PayloadKind
    # Where the target values were read, when that is not `source` (id_prop.csv:LINE beside a CIF file).
    target_source: str | None = None

    def fingerprint(self) -> str:
        """A stable hash of the structure as given, without parsing it."""
        if self.kind == "cif":
            text = self.payload
        elif self.kind == "structure_dict":
            text = json.dumps(self.payload, sort_keys=True, default=str)
        else:
            text = json.dumps(self.payload.as_dict(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def to_structure(self) -> Structure:
        if self.kind == "cif":
            # The P1 CIFs pymatgen writes are read by the fast reader (same structure); any other
            # CIF, bad ones included, goes to pymatgen's parser and fails there as before.
            structure = parse_p1_cif(self.payload) if isinstance(self.payload, str) else None
            return structure if structure is not None else Structure.from_str(self.payload, fmt="cif")
        if self.kind == "structure_dict":
            return Structure.from_dict(self.payload)
        return self.payload


@dataclass
class LoadReport:
    """Counts of a load: read, kept, dropped by reason (with a few example sources per reason)."""

    path: str
    read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    per_property: Counter[str] = field(default_factory=Counter)

    def drop(self, error: DataError) -> None:
        self.dropped[error.reason] += 1
        self.examples.setdefault(error.reason, [])
        if len(self.examples[error.reason]) < 3:
            self.examples[error.reason].append(str(error))

    def summary(self) -> str:
        lines = [f"{self.path}: read {self.read}, kept {self.kept}, dropped {sum(self.dropped.values())}"]
        for name, count in sorted(self.per_property.items()):
            lines.append(f"  {name:<16} {count:>8} values")
        for reason, count in self.dropped.most_common():
            lines.append(f"  dropped ({reason}): {count}  e.g. {self.examples.get(reason, [''])[0]}")
        return "\n".join(lines)
