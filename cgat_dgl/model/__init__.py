"""The CGAT model (Schmidt et al. 2021; Hoffmann et al. 2023) on swappable message-passing backends."""

from cgat_dgl.model.cgat import CGAT
from cgat_dgl.model.config import ModelConfig

__all__ = ["CGAT", "ModelConfig"]
