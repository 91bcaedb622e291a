"""Crystal Graph Attention Networks in DGL, and transfer learning from cheap to accurate DFT data."""

import os

# DGL picks its tensor backend from the environment at import time; this package only speaks PyTorch.
os.environ.setdefault("DGLBACKEND", "pytorch")

__version__ = "0.4.0"
