"""Every size of the CGAT model in one validated configuration, with named presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EdgeUpdate = Literal["paper", "reference", "none"]
Implementation = Literal["plain", "fast"]

# Residual output network of the paper and the reference code.
PAPER_HEAD_WIDTHS = [1024, 1024, 512, 512, 256, 256, 128]


class ModelConfig(BaseModel):
    """Sizes and options of ``CGAT``.

    ``edge_update``: "paper" applies eq. 2a-2d (attention over heads); "reference" the reference
    code's default e <- e + MLP(e); "none" keeps the rank embedding fixed.
    ``implementation``: "plain" runs eq. 1 and 2 as written, as DGL message passing (the definition,
    DGL only); "fast" runs the same computation reordered (``cgat_dgl.model.fast``) on either
    ``backend`` of message-passing primitives ("dgl" or plain "torch"). All choices give the same
    model and share weights.
    ``n_fidelities``: with 2 or more, the model is a multi-fidelity model (``cgat_dgl.training.multifidelity``).
    """

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(200, gt=0)  # matscholar element embedding
    atom_fea_len: int = Field(128, ge=2)  # F: node and edge feature width
    msg_heads: int = Field(6, gt=0)  # attention heads in message passing and crystal pooling
    fcnn_hidden: int = Field(512, gt=0)  # hidden width of the per-head score/message MLPs
    n_graph: int = Field(5, gt=0)  # message-passing steps (eq. 1, 2)
    roost_steps: int = Field(3, ge=0)  # message steps on the composition graph
    roost_hidden: int = Field(256, gt=0)  # hidden width of the Roost gate/message MLPs
    hyper_hidden: int = Field(128, gt=0)  # hidden width of the hypernetworks
    hyper_layers: int = Field(3, gt=0)  # hidden layers of the hypernetworks
    max_nbr: int = Field(24, gt=0)  # neighbours per atom; shell ranks are 1..max_nbr
    head_widths: list[int] = Field(default_factory=lambda: list(PAPER_HEAD_WIDTHS), min_length=1)
    edge_update: EdgeUpdate = "paper"
    backend: Literal["dgl", "torch"] = "dgl"
    implementation: Implementation = "plain"
    # Fidelities of a multi-fidelity model: a learned vector per fidelity is added to the Roost
    # context, and every batch says which fidelity each crystal's target is (0: single-fidelity model).
    n_fidelities: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if any(width <= 0 for width in self.head_widths):
            raise ValueError(f"head_widths must be positive, got {self.head_widths}")
        check_implementation(self.implementation, self.backend)
        return self

    @property
    def pooled_width(self) -> int:
        """Width of the crystal embedding fed to the output network: heads concatenated.

        The reference concatenates the pooling heads (5 x 128 = 640 with its default of 5
        heads) and uses the Roost context only inside the pooling attention, not as an extra
        input to the output network; this model does the same.
        """
        return self.msg_heads * self.atom_fea_len

    @classmethod
    def preset(cls, name: str, **overrides: object) -> "ModelConfig":
        """A named configuration ("paper", "cpu" or "smoke"), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def check_implementation(implementation: str, backend: str) -> None:
    if implementation == "plain" and backend != "dgl":
        raise ValueError(
            f"the plain implementation is DGL message passing and cannot run on backend {backend!r}; "
            "use implementation='fast'"
        )


PRESETS: dict[str, dict[str, object]] = {
    # Section IV.B of the paper: F = 128, 6 heads, FCNN hidden 512, 5 steps, 3 Roost steps,
    # hypernetworks of 3 x 128 (tanh), 24 neighbours, the paper's residual network.
    "paper": {"implementation": "fast"},
    # The paper's model at a size that pre-trains on ~30k structures on two CPU cores in a few
    # minutes per epoch: ~80 MFLOP per training step of a 25-atom structure; benchmarks/perf/train.py
    # measures its structures/s (benchmarks/results/train.json). FCNN hidden 32 rather than 64
    # doubles the speed; edge_update="reference" would be ~1.25x faster.
    "cpu": {
        "implementation": "fast",
        "atom_fea_len": 32,
        "msg_heads": 2,
        "fcnn_hidden": 32,
        "n_graph": 3,
        "roost_steps": 2,
        "roost_hidden": 64,
        "hyper_hidden": 32,
        "hyper_layers": 2,
        "head_widths": [128, 64, 32],
    },
    # Tiny, for tests.
    "smoke": {
        "implementation": "fast",
        "atom_fea_len": 8,
        "msg_heads": 2,
        "fcnn_hidden": 12,
        "n_graph": 2,
        "roost_steps": 1,
        "roost_hidden": 8,
        "hyper_hidden": 8,
        "hyper_layers": 1,
        "head_widths": [16, 8],
    },
}
