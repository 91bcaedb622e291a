"""The CGAT model: embeddings, message passing (eq. 1, 2), Roost context, pooling, residual head."""

from __future__ import annotations

import torch
from torch import nn

from cgat_dgl.graphs.batch import Batch
from cgat_dgl.model.config import ModelConfig
from legacy_cgat.edge_input import EdgeFeatures, EdgeKinds
from legacy_cgat.edge_update import make_edge_update
from legacy_cgat.embedding import ElementTable, InitialFeatures, InputEmbedding
from legacy_cgat.node_update import NodeUpdate
from cgat_dgl.model.pooling import CrystalPooling
from cgat_dgl.model.residual_head import ResidualHead
from cgat_dgl.model.roost import Roost
from cgat_dgl.ops import make_graph_ops
from cgat_dgl.ops.base import GraphOps


class MessagePassingStep(nn.Module):
    """One step t: node update (eq. 1) and edge update (eq. 2), both from (h^t, e^t).

    The last step has no edge update: nothing reads its result.
    """

    def __init__(self, config: ModelConfig, first: bool, last: bool) -> None:
        super().__init__()
        self.first = first
        self.node = NodeUpdate(config, first=first)
        self.edge = None if last else make_edge_update(config)

    def forward(
        self, h: torch.Tensor, h0: InitialFeatures, e: EdgeFeatures, ops: GraphOps
    ) -> tuple[torch.Tensor, EdgeFeatures]:
        kinds = None
        if self.first:  # h = h0: networks of z_ij need one evaluation per edge kind
            kinds = EdgeKinds.find(h0.per_element, h0.element_index, e, ops.src, ops.dst)
        h_next = self.node(h, h0, e, ops, kinds=kinds)
        e_next = e if self.edge is None else self.edge(h, e, ops, kinds=kinds)
        return h_next, e_next


class CGAT(nn.Module):
    """Crystal graph attention network; ``forward`` returns (C, 2): normalised prediction, log-std."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
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

    def module_groups(self) -> dict[str, nn.Module]:
        """Disjoint parts that together hold every trainable parameter (for freezing and logging)."""
        return {
            "embedding": self.embedding,
            "message_passing": self.message_passing,
            "roost": self.roost,
            "pooling": self.pooling,
            "head": self.head,
        }

    def forward(self, batch: Batch) -> torch.Tensor:
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

        h0 = self.embedding.atoms(batch.atomic_numbers)
        e = EdgeFeatures(batch.edge_rank, table=self.embedding.ranks.weight)
        h = h0.values
        for step in self.message_passing:
            h, e = step(h, h0, e, atom_ops)

        context = self.roost(batch.comp_elements, batch.comp_fractions, comp_ops)
        return self.head(self.pooling(h, context, atom_ops))

    def count_parameters(self) -> dict[str, int]:
        """Trainable parameters per module group and in total."""
        counts = {
            name: sum(p.numel() for p in module.parameters() if p.requires_grad)
            for name, module in self.module_groups().items()
        }
        counts["total"] = sum(counts.values())
        return counts
