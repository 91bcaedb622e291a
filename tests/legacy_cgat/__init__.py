"""The CGAT model as it was before the plain/fast split, kept as the reference the current model is
tested against (same weights, same outputs). Not used by the package. Its parts that the split left
unchanged (configuration, element table, Roost, pooling, the residual head, the small layers) are
the package's own.

Originally: the CGAT model (Schmidt et al. 2021; Hoffmann et al. 2023) on swappable message-passing backends."""

from legacy_cgat.cgat import CGAT
from cgat_dgl.model.config import ModelConfig

__all__ = ["CGAT", "ModelConfig"]
