"""Timing helpers shared by the benchmarks; torch only, so that they run on a bare GPU machine."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the time it took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
