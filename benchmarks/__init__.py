"""The benchmark suite: manifests, the runner, tracking, studies and reports."""

import cgat_dgl  # noqa: F401  (sets the numerics before anything computes)
