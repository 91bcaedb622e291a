"""The loaders of a training run: each epoch's shuffled training batches, seeded by ``seed + epoch``
so that a resumed run sees the same batches (with DDP, each rank's share of them), and evaluation
batches; over graphs, or over crystal features when only the head trains (``frozen_body``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..graphs.collate import make_loader
from . import distributed, frozen_body
from .config import TrainConfig


class EpochLoaders:
    def __init__(self, config: TrainConfig, backend: str) -> None:
        self.config = config
        self.backend = backend
        self.on_features = False  # the datasets hold crystal features (frozen_body), not graphs
        self._train: DataLoader | None = None  # reused across epochs where that gives the same batches

    def use_features(self) -> None:
        """From now on the datasets are crystal features of the frozen body."""
        self.on_features = True
        self._train = None

    def for_epoch(self, train_set: Sequence[Any], epoch: int) -> DataLoader:
        """The training loader of this epoch, its shuffle seeded by ``seed + epoch`` so that a resumed
        run sees the same batches. Without workers one loader is reseeded (the same order as a new
        one); worker processes copy the loader's state, so they get a new loader each epoch. A set
        with ``epoch_view(seed)`` (a multi-fidelity draw) gives each epoch its own items."""
        seed = self.config.seed + epoch
        epoch_view = getattr(train_set, "epoch_view", None)
        if distributed.is_active():
            return self._distributed(train_set if epoch_view is None else epoch_view(seed), epoch, new=epoch_view is not None)
        if epoch_view is not None:
            return self.loader(epoch_view(seed), train=True, seed=seed)
        if self.config.num_workers > 0:
            return self.loader(train_set, train=True, seed=seed)
        if self._train is None:
            self._train = self.loader(train_set, train=True)
        if self._train.generator is None:
            raise RuntimeError("make_loader gave no generator: shuffling could not be made reproducible")
        self._train.generator.manual_seed(seed)
        return self._train

    def _distributed(self, dataset: Sequence[Any], epoch: int, new: bool) -> DataLoader:
        """This rank's share of the epoch: a DistributedSampler whose ``set_epoch`` draws the
        single-process permutation (seeded ``seed + epoch``), so the ranks' batches together are
        the single-process batches. The sampler runs in the main process, so one loader serves
        every epoch, worker processes or not; an epoch view (``new``) gets its own."""
        if new or self._train is None:
            sampler = distributed.train_sampler(dataset, seed=self.config.seed)
            self._train = self.loader(dataset, train=True, sampler=sampler)
        sampler = self._train.sampler
        assert isinstance(sampler, torch.utils.data.DistributedSampler)
        sampler.set_epoch(epoch)
        return self._train

    def loader(
        self, dataset: Sequence[Any], train: bool, seed: int | None = None, sampler: Any = None
    ) -> DataLoader:
        """A training loader (shuffled, or ordered by ``sampler``) or an evaluation loader. With DDP
        a training batch is this rank's share of the global ``batch_size``; an evaluation batch is
        ``eval_batch_size`` per rank (it changes memory use, not results)."""
        config = self.config
        if self.on_features:
            return DataLoader(
                dataset,  # type: ignore[arg-type]
                batch_size=config.batch_size if train else config.eval_batch_size or config.batch_size,
                shuffle=train,
                generator=torch.Generator().manual_seed(config.seed if seed is None else seed),
                collate_fn=frozen_body.collate_features,
                drop_last=config.drop_last and train,
            )
        return make_loader(
            dataset,
            distributed.per_rank_batch(config.batch_size) if train else config.eval_batch_size or config.batch_size,
            shuffle=train and sampler is None,
            backend=self.backend,
            seed=config.seed if seed is None else seed,
            num_workers=config.num_workers,
            drop_last=config.drop_last and train,
            sampler=sampler,
        )
