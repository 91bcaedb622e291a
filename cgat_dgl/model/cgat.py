"""The CGAT model: embeddings, message passing (eq. 1, 2), Roost context, pooling, residual head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cgat_dgl.graphs.batch import Batch
from cgat_dgl.model.config import ModelConfig, check_implementation
from cgat_dgl.model.edge_update import make_edge_update
from cgat_dgl.model.embedding import ElementTable, InputEmbedding
from cgat_dgl.model.fast import fast_message_passing
from cgat_dgl.model.fast.edge_features import EdgeFeatures, InitialFeatures
from cgat_dgl.model.node_update import NodeUpdate
from cgat_dgl.model.pooling import CrystalPooling
from cgat_dgl.model.residual_head import ResidualHead
from cgat_dgl.model.roost import Roost
from cgat_dgl.ops import make_graph_ops


class MessagePassingStep(nn.Module):
    """One step t: node update (eq. 1) and edge update (eq. 2), both from (h^t, e^t).

    The last step has no edge update: nothing reads its result.
    """

    def __init__(self, config: ModelConfig, first: bool, last: bool) -> None:
        super().__init__()
        self.node = NodeUpdate(config, first=first)
        self.edge = None if last else make_edge_update(config)

    def forward(
        self, graph: Any, h: torch.Tensor, h0: torch.Tensor, e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h_next = self.node(graph, h, h0, e)
        e_next = e if self.edge is None else self.edge(graph, h, e)
        return h_next, e_next


class CGAT(nn.Module):
    """Crystal graph attention network; ``forward`` returns (C, 2): normalised prediction, log-std."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_implementation(config.implementation, config.backend)
        self.config = config
        f = config.atom_fea_len
        self.elements = ElementTable(config.embedding_dim)  # a frozen buffer shared by two branches
        self.embedding = InputEmbedding(self.elements, config.embedding_dim, f, config.max_nbr)
        self.message_passing = nn.ModuleList(
            MessagePassingStep(config, first=(t == 0), last=(t == config.n_graph - 1))
            for t in range(config.n_graph)
        )
        self.roost = Roost(config, self.elements)
        self.pooling = CrystalPooling(config)
        self.head = ResidualHead(config.pooled_width, config.head_widths)
        # Multi-fidelity: c <- c + v_fidelity. Zero at the start, so both fidelities begin as one model.
        self.fidelity = nn.Embedding(config.n_fidelities, f) if config.n_fidelities else None
        if self.fidelity is not None:
            nn.init.zeros_(self.fidelity.weight)

    def module_groups(self) -> dict[str, nn.Module]:
        """Disjoint parts that together hold every trainable parameter (for freezing and logging)."""
        groups: dict[str, nn.Module] = {
            "embedding": self.embedding,
            "message_passing": self.message_passing,
            "roost": self.roost,
            "pooling": self.pooling,
            "head": self.head,
        }
        if self.fidelity is not None:
            groups["fidelity"] = self.fidelity
        return groups

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.crystal_features(batch))

    def crystal_features(self, batch: Batch) -> torch.Tensor:
        """The pooled crystal vectors (C, pooled_width) that the regression head reads."""
        if batch.edge_rank.numel() and int(batch.edge_rank.max()) > self.config.max_nbr:
            raise ValueError(
                f"batch holds shell ranks up to {int(batch.edge_rank.max())} but the model embeds "
                f"ranks 1..{self.config.max_nbr}: build the graphs with max_nbr={self.config.max_nbr}"
            )
        backend = self.config.backend
        num_crystals = batch.num_crystals
        atom_ops = make_graph_ops(
            backend, batch.edge_src, batch.edge_dst, batch.num_atoms,
            batch.atom_crystal, num_crystals, graph=batch.atom_graph,
        )  # fmt: skip
        comp_ops = make_graph_ops(
            backend, batch.comp_src, batch.comp_dst, int(batch.comp_elements.shape[0]),
            batch.comp_crystal, num_crystals, graph=batch.comp_graph,
        )  # fmt: skip

        if self.config.implementation == "plain":
            h0 = self.embedding.atoms(batch.atomic_numbers)
            e = self.embedding.ranks(batch.edge_rank)
            h = h0
            for step in self.message_passing:
                h, e = step(atom_ops.graph, h, h0, e)  # type: ignore[attr-defined]  # DGL ops
        else:
            initial = InitialFeatures.embed(self.embedding.atoms, batch.atomic_numbers)
            ranks = EdgeFeatures(batch.edge_rank, table=self.embedding.ranks.weight)
            h = fast_message_passing(self.message_passing, initial, ranks, atom_ops)

        context = self.roost(batch.comp_elements, batch.comp_fractions, comp_ops)
        if self.fidelity is not None:
            context = context + self.fidelity(self._fidelity_index(batch))
        return self.pooling(h, context, atom_ops)

    def _fidelity_index(self, batch: Batch) -> torch.Tensor:
        if batch.fidelity is None:
            raise ValueError(
                f"a multi-fidelity model (n_fidelities={self.config.n_fidelities}) needs the fidelity of each "
                "crystal: batch a cgat_dgl.training.multifidelity.FidelityDataset"
            )
        if batch.fidelity.numel() and int(batch.fidelity.max()) >= self.config.n_fidelities:
            raise ValueError(
                f"batch holds fidelity {int(batch.fidelity.max())} but the model has {self.config.n_fidelities}"
            )
        return batch.fidelity

    def count_parameters(self) -> dict[str, int]:
        """Trainable parameters per module group and in total."""
        counts = {
            name: sum(p.numel() for p in module.parameters() if p.requires_grad)
            for name, module in self.module_groups().items()
        }
        counts["total"] = sum(counts.values())
        return counts
