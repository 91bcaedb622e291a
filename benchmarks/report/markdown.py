"""Assembly of report.md: headed sections of text, tables, figure links and plain notes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def write_csv(frame: "pd.DataFrame", path: Path) -> Path:
    """A table of the report as CSV beside report.md."""
    frame.to_csv(path, index=False)
    return path


def fmt_size(value: float) -> str:
    """Dataset sizes the way the paper writes them: 1.6 M, 613 k, 950."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value >= 1e6:
        return f"{value / 1e6:.1f} M"
    if value >= 1e4:
        return f"{value / 1e3:.0f} k"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def fmt_range(value: float, low: float, high: float) -> str:
    text = fmt_size(value)
    if math.isfinite(low) and math.isfinite(high) and fmt_size(low) != fmt_size(high):
        text += f" (1σ: {fmt_size(low)}–{fmt_size(high)})"
    return text


@dataclass
class MarkdownReport:
    title: str
    out_dir: Path
    blocks: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.blocks.append(f"## {title}\n")

    def text(self, paragraph: str) -> None:
        self.blocks.append(paragraph.strip() + "\n")

    def note(self, message: str) -> None:
        self.blocks.append(f"> **Not computed / caveat:** {message.strip()}\n")

    def table(self, markdown: str, csv: Path | None = None, caption: str = "") -> None:
        if caption:
            self.blocks.append(f"*{caption}*\n")
        self.blocks.append(markdown)
        if csv is not None:
            self.blocks.append(f"Data: [{csv.name}]({csv.name})\n")

    def figure(self, path: Any, caption: str, missing: str) -> None:
        """Link a figure with its caption, or say plainly why it is absent."""
        if path is None:
            self.note(missing)
            return
        if not path:  # figures.NotDrawn: it failed to draw
            self.note(f"{path.name} not drawn: {path.reason}")  # type: ignore[attr-defined]
            return
        self.blocks.append(f"![{caption}]({path.name})\n\n*{path.name}: {caption}*\n")

    def write(self) -> Path:
        path = self.out_dir / "report.md"
        path.write_text(f"# {self.title}\n\n" + "\n".join(self.blocks), encoding="utf-8")
        return path
