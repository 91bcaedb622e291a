"""Crystal Graph Attention Networks in DGL, and transfer learning from cheap to accurate DFT data."""

import os

# DGL picks its tensor backend from the environment at import time; this package only speaks PyTorch.
os.environ.setdefault("DGLBACKEND", "pytorch")

from cgat_dgl import numerics  # noqa: E402  (before anything imports torch)

numerics.pin()

__version__ = "0.5.0"
