"""Data-parallel training: 2 gloo ranks on CPU against one process with the same global batch.

The ranks are started with ``torch.multiprocessing.spawn`` and meet through a ``file://`` store
in the test's temporary folder (no port to pick, so no port race); the CLI test goes through
``cgat train --ddp --nproc-per-node 2``, i.e. ``torchrun --standalone``, which picks a free port.

Why the numbers are close but not bitwise equal: the ranks' k-th batches together are exactly the
single-process k-th batch (see ``cgat_dgl.training.distributed``; checked below without processes),
and averaging the ranks' mean losses is the global mean, so the gradients agree up to float32
rounding: each rank sums the gradient over its 2 crystals and the all-reduce then adds the ranks
(another summation order), and the forward pass runs on 2-crystal batches instead of 4 (other
kernel blockings). The model has no batch norm (LayerNorm only, which is per item) and no dropout,
so nothing else differs. One rounding step is ~1e-7 relative and 12 AdamW steps amplify it a
little (observed: <= ~3e-8 on the metrics, 0 on most); ``RTOL`` = 1e-5 leaves a margin of >100x
while a real mistake moves the metrics by 1e-3 or more: a plain ``DistributedSampler`` (other
batches) missed by 2e-3, and the test checks that one process with batch 2 (ranks stepping on
their own halves) misses by more than 100 x ``RTOL``. A world size of 1 is bitwise the same run.
"""

from __future__ import annotations

import contextlib
import datetime
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mlflow.tracking import MlflowClient

from cgat_dgl.graphs.collate import make_loader
from cgat_dgl.model import ModelConfig
from cgat_dgl.training import distributed
from cgat_dgl.training import run_state as run_state_module
from cgat_dgl.training import trainer as trainer_module
from cgat_dgl.training.checkpoint import read_checkpoint
from cgat_dgl.training.config import TrainConfig
from cgat_dgl.training.multifidelity import TARGET, FidelityDataset, JointTrainingSet
from cgat_dgl.training.tracking import Tracker
from cgat_dgl.training.trainer import TrainResult, train
from tests.training_fixtures import (  # noqa: F401 (single_thread is a fixture)
    pretrained_checkpoint,
    real_dataset,
    real_rows,
    single_thread,
    three_sets,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("single_thread")

WORLD = 2
SMOKE = ModelConfig.preset("smoke")
# 12 train / 6 val / 6 test crystals. The global batch of 4 is 2 crystals per rank, 3 steps per
# epoch; 12 is divisible by 2, so the DistributedSampler pads nothing. threads=1 in both modes:
# the thread count changes float reductions too.
CONFIG = TrainConfig(epochs=4, batch_size=4, eval_batch_size=4, lr=3e-3, cycle_period=4, seed=1, device="cpu", threads=1)
HEAD = TrainConfig.transfer(
    epochs=3, batch_size=4, lr=3e-3, cycle_period=4, seed=1, device="cpu", strategy="head", threads=1
)
# Multi-fidelity (an ``epoch_view`` training set): 12 target crystals and a fresh 6 of 16 source
# crystals each epoch, 18 a epoch: the last global batch is 2, one crystal per rank.
JOINT_MODEL = ModelConfig.preset("smoke", n_fidelities=2)
JOINT = CONFIG.model_copy(update={"strategy": "multifidelity", "epochs": 3})
RTOL = 1e-5
EXPERIMENT = "ddp"
TIMEOUT = datetime.timedelta(minutes=4)  # a rank that fails leaves the other waiting at most this long


class Interrupted(Exception):
    """Raised by every rank's epoch callback: the run stops as a kill after that epoch would."""


def _stop_after(stop_epoch: int) -> Callable[[int, dict[str, float]], None]:
    def callback(epoch: int, _: dict[str, float]) -> None:
        if epoch == stop_epoch:
            raise Interrupted

    return callback


def _counting_saves(calls: list[str]) -> None:
    """Record every checkpoint this process writes (``save_checkpoint`` of the loop and of the run state)."""
    original = trainer_module.save_checkpoint

    def save(state: dict[str, Any], path: Path) -> Path:
        calls.append(Path(path).name)
        return original(state, path)

    trainer_module.save_checkpoint = save  # type: ignore[assignment]
    run_state_module.save_checkpoint = save  # type: ignore[assignment]


def _rank_main(rank: int, phase: str, root: Path, uri: str, data: dict[str, Any]) -> None:
    """One rank of a phase. ``first``: an uninterrupted run with MLflow on rank 0, then a run
    stopped after its second epoch. ``second`` (fresh processes, as after a kill): resume that run,
    a head-strategy transfer, a multi-fidelity run, and a global batch the ranks cannot split."""
    torch.set_num_threads(1)
    saves: list[str] = []
    _counting_saves(saves)
    outcome: dict[str, Any] = {}
    store = root / f"store-{phase}"
    with distributed.process_group("cpu", init_method=store.as_uri(), rank=rank, world_size=WORLD, timeout=TIMEOUT):
        if phase == "first":
            tracker = Tracker("ddp smoke", experiment=EXPERIMENT, tracking_uri=uri) if rank == 0 else None
            with tracker or contextlib.nullcontext():
                outcome["full"] = train(SMOKE, CONFIG, *data["sets"], out_dir=root / "full", tracker=tracker)
            outcome["full_saves"] = list(saves)
            try:
                train(SMOKE, CONFIG, *data["sets"], out_dir=root / "resumed", epoch_callback=_stop_after(1))
            except Interrupted:
                outcome["interrupted"] = True
        else:
            seen: list[int] = []
            outcome["resumed"] = train(SMOKE, CONFIG, *data["sets"], out_dir=root / "resumed",
                                       epoch_callback=lambda epoch, _: seen.append(epoch))
            outcome["resumed_epochs"] = seen
            outcome["head"] = train(SMOKE, HEAD, *data["sets"], out_dir=root / "head", init_checkpoint=data["checkpoint"])
            outcome["joint"] = train(JOINT_MODEL, JOINT, *data["joint_sets"], out_dir=root / "joint")
            try:
                train(SMOKE, CONFIG.model_copy(update={"batch_size": 5}), *data["sets"], out_dir=root / "odd")
            except ValueError as error:
                outcome["odd_batch_error"] = str(error)
    with open(root / f"{phase}-rank{rank}.pkl", "wb") as handle:
        pickle.dump(outcome, handle)


def _spawn(phase: str, root: Path, uri: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    mp.spawn(_rank_main, args=(phase, root, uri, data), nprocs=WORLD, join=True)
    outcomes = []
    for rank in range(WORLD):
        with open(root / f"{phase}-rank{rank}.pkl", "rb") as handle:
            outcomes.append(pickle.load(handle))
    return outcomes


@pytest.fixture(scope="module")
def sets():
    return three_sets(24)


@pytest.fixture(scope="module")
def joint_sets(sets):
    train_set, val_set, test_set = sets
    source = real_dataset(40)
    source = source.subset(source.ids[24:])  # 16 crystals outside the three sets
    return (
        JointTrainingSet(source, train_set, source_ratio=0.5),
        FidelityDataset(val_set, TARGET),
        FidelityDataset(test_set, TARGET),
    )


@pytest.fixture(scope="module")
def ddp(sets, joint_sets, tmp_path_factory) -> dict[str, Any]:
    """Both phases, each rank's outcome, and where they wrote."""
    root = tmp_path_factory.mktemp("ddp")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    data = {"sets": sets, "joint_sets": joint_sets, "checkpoint": pretrained_checkpoint()}
    first = _spawn("first", root, uri, data)
    # the interrupted run's files, before the second phase resumes it
    interrupted_epoch = read_checkpoint(root / "resumed" / "last.pt")["epoch"]
    second = _spawn("second", root, uri, data)
    return {"root": root, "uri": uri, "first": first, "second": second, "interrupted_epoch": interrupted_epoch}


@pytest.fixture(scope="module")
def single(sets, joint_sets, tmp_path_factory) -> dict[str, TrainResult]:
    root = tmp_path_factory.mktemp("single")
    return {
        "full": train(SMOKE, CONFIG, *sets, out_dir=root / "full"),
        "head": train(SMOKE, HEAD, *sets, out_dir=root / "head", init_checkpoint=pretrained_checkpoint()),
        "joint": train(JOINT_MODEL, JOINT, *joint_sets, out_dir=root / "joint"),
        # the per-rank batch as the whole batch: what DDP would compute if the ranks did not average
        "half_batch": train(SMOKE, CONFIG.model_copy(update={"batch_size": 2}), *sets, out_dir=root / "half"),
    }


def _relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _assert_close(ddp_result: TrainResult, single_result: TrainResult) -> None:
    assert ddp_result.best_epoch == single_result.best_epoch
    assert ddp_result.best_val_mae == pytest.approx(single_result.best_val_mae, rel=RTOL)
    for name in ("mae", "rmse", "r2"):
        assert ddp_result.test[name] == pytest.approx(single_result.test[name], rel=RTOL), name
    for ddp_row, single_row in zip(ddp_result.history, single_result.history, strict=True):
        assert ddp_row["structures"] == single_row["structures"]
        assert ddp_row["lr"] == pytest.approx(single_row["lr"], rel=1e-12)
        assert ddp_row["train_mae"] == pytest.approx(single_row["train_mae"], rel=RTOL)
        assert ddp_row["val_mae"] == pytest.approx(single_row["val_mae"], rel=RTOL)
    # the gathered test predictions are in dataset order: the same ids carry the same values
    assert list(ddp_result.test_predictions) == list(single_result.test_predictions)
    np.testing.assert_allclose(
        list(ddp_result.test_predictions.values()), list(single_result.test_predictions.values()), rtol=RTOL, atol=1e-6
    )


def _print_table(label: str, ddp_result: TrainResult, single_result: TrainResult) -> None:
    """The numbers behind the comparison (shown with ``pytest -s``)."""
    rows = [
        ("best epoch", ddp_result.best_epoch, single_result.best_epoch),
        ("best val MAE", ddp_result.best_val_mae, single_result.best_val_mae),
        ("test MAE", ddp_result.test["mae"], single_result.test["mae"]),
        ("test RMSE", ddp_result.test["rmse"], single_result.test["rmse"]),
        ("last train MAE", ddp_result.history[-1]["train_mae"], single_result.history[-1]["train_mae"]),
    ]
    print(f"\n{label}\nmetric           DDP (2 ranks x 2)   1 process (batch 4)   relative difference")
    for name, a, b in rows:
        print(f"{name:<16} {a:<19.9g} {b:<21.9g} {_relative(a, b) if b else 0.0:.2e}")


def test_ddp_matches_one_process_with_the_same_global_batch(ddp, single) -> None:
    ddp_result, single_result = ddp["first"][0]["full"], single["full"]
    _print_table("strategy none, 4 epochs", ddp_result, single_result)
    _assert_close(ddp_result, single_result)
    assert ddp_result.trained_structures == single_result.trained_structures == 4 * 12


def test_the_tolerance_tells_a_wrong_batch_apart(single) -> None:
    """One process with the per-rank batch (2) as its batch misses the batch-4 run by far more than
    RTOL, so the comparison above would catch ranks that step on their own halves."""
    full, half = single["full"], single["half_batch"]
    differences = [_relative(half.best_val_mae, full.best_val_mae), _relative(half.test["mae"], full.test["mae"])]
    print(f"\none process, batch 2 vs batch 4: relative differences {differences}")
    assert max(differences) > 100 * RTOL, differences


def test_every_rank_gets_the_same_result(ddp) -> None:
    for key, phase in (("full", "first"), ("resumed", "second"), ("head", "second"), ("joint", "second")):
        rank0, rank1 = ddp[phase][0][key], ddp[phase][1][key]
        assert rank1.history == rank0.history, key
        assert rank1.test == rank0.test and rank1.best_epoch == rank0.best_epoch, key
        assert rank1.test_predictions == rank0.test_predictions, key
    assert ddp["first"][1]["full"].run_id == ddp["first"][0]["full"].run_id is not None


def test_only_rank_0_writes_checkpoints_and_one_mlflow_run(ddp) -> None:
    rank0, rank1 = ddp["first"]
    assert rank1["full_saves"] == []  # rank 1 never wrote a checkpoint
    assert rank0["full_saves"].count("last.pt") == CONFIG.epochs and "best.pt" in rank0["full_saves"]
    out = ddp["root"] / "full"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "test_predictions.csv"]
    last = read_checkpoint(out / "last.pt")
    assert last["epoch"] == CONFIG.epochs and last["metadata"]["world_size"] == WORLD
    result = rank0["full"]
    assert read_checkpoint(out / "best.pt")["best_val_mae"] == result.best_val_mae

    client = MlflowClient(tracking_uri=ddp["uri"])
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == result.run_id == last["metadata"]["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_val_mae"] == pytest.approx(result.best_val_mae)
    assert run.data.metrics["test_mae"] == pytest.approx(result.test["mae"])
    assert run.data.tags["cgat.ddp.world_size"] == "2" and run.data.tags["cgat.ddp.per_rank_batch"] == "2"
    assert run.data.params["train.batch_size"] == "4"  # the global batch
    epochs = client.get_metric_history(run.info.run_id, "val_mae")
    assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == [row["val_mae"] for row in result.history]


def test_a_ddp_run_killed_after_epoch_2_resumes_to_the_uninterrupted_result(ddp) -> None:
    assert all(outcome["interrupted"] for outcome in ddp["first"])
    assert ddp["interrupted_epoch"] == 2
    for rank in range(WORLD):
        assert ddp["second"][rank]["resumed_epochs"] == [2, 3]  # only the remaining epochs ran, on every rank
    resumed, uninterrupted = ddp["second"][0]["resumed"], ddp["first"][0]["full"]
    assert resumed.history == uninterrupted.history  # gloo sums in a fixed order: bitwise the same run
    assert resumed.test == uninterrupted.test and resumed.best_epoch == uninterrupted.best_epoch
    resumed_weights = read_checkpoint(resumed.checkpoint)["model_state"]
    uninterrupted_weights = read_checkpoint(uninterrupted.checkpoint)["model_state"]
    assert all(torch.equal(resumed_weights[k], uninterrupted_weights[k]) for k in uninterrupted_weights)


def test_head_strategy_with_frozen_parameters(ddp, single) -> None:
    result = ddp["second"][0]["head"]
    _print_table("strategy head (transfer), 3 epochs", result, single["head"])
    _assert_close(result, single["head"])
    assert result.frozen_groups == ["embedding", "message_passing", "roost", "pooling"]
    before = read_checkpoint(pretrained_checkpoint())["model_state"]
    after = read_checkpoint(ddp["root"] / "head" / "last.pt")["model_state"]
    changed = {name.split(".", 1)[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"head"}  # the frozen groups stayed put on the rank that wrote them


def test_a_multi_fidelity_epoch_view_trains_the_same_under_ddp(ddp, single) -> None:
    result = ddp["second"][0]["joint"]
    _print_table("multi-fidelity (epoch_view), 3 epochs", result, single["joint"])
    _assert_close(result, single["joint"])
    assert [row["structures"] for row in result.history] == [18, 18, 18]


def test_a_global_batch_the_ranks_cannot_split_is_refused(ddp) -> None:
    for outcome in ddp["second"]:
        assert "divisible by the 2 processes" in outcome["odd_batch_error"]


@pytest.mark.parametrize("epoch", [0, 3])
def test_the_ranks_batches_together_are_the_single_process_batches(sets, epoch: int) -> None:
    """What makes DDP the same run: the ranks' k-th batches, joined, are the single-process k-th
    batch of that epoch (the trainer's loader is seeded ``seed + epoch``)."""
    train_set = sets[0]
    single = [sorted(batch.ids) for batch in make_loader(train_set, 4, shuffle=True, seed=CONFIG.seed + epoch)]
    per_rank = []
    for rank in range(WORLD):
        sampler = distributed.train_sampler(train_set, seed=CONFIG.seed, num_replicas=WORLD, rank=rank)
        sampler.set_epoch(epoch)
        per_rank.append([batch.ids for batch in make_loader(train_set, 4 // WORLD, shuffle=False, sampler=sampler)])
    assert [sorted(a + b) for a, b in zip(*per_rank, strict=True)] == single
    # a set W does not divide: torch's padding repeats W - 1 items, every item is still seen
    odd = train_set.subset(train_set.ids[:11])
    shares = [list(distributed.train_sampler(odd, seed=0, num_replicas=WORLD, rank=rank)) for rank in range(WORLD)]
    assert [len(share) for share in shares] == [6, 6] and set(shares[0] + shares[1]) == set(range(11))


def test_the_helpers_are_the_identity_in_one_process() -> None:
    assert not distributed.is_active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    data = list(range(7))
    assert distributed.shard(data) is data
    assert distributed.all_reduce_sum([1.5, 3]) == [1.5, 3]
    assert distributed.per_rank_batch(5) == 5
    predicted = np.arange(3.0)
    assert distributed.gather_shards(predicted, predicted, ["a", "b", "c"])[0] is predicted
    parts = [np.asarray(data[r::3]) for r in range(3)]  # what 3 ranks' shards hold
    assert distributed._interleave(parts).tolist() == data


def test_cgat_train_ddp_starts_torchrun_and_logs_one_run(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "tiny.jsonl", real_rows(30, "e_form_pbe"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "cgat_dgl.cli", "train", "--data", str(data), "--property", "e_form_pbe",
        "--preset", "smoke", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--device", "cpu",
        "--no-cache", "--threads", "1", "--out", str(out), "--tracking-uri", uri, "--experiment", "cli-ddp",
        "--ddp", "--nproc-per-node", "2",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best epoch") == 1  # rank 0 reports, rank 1 is quiet
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "split.json", "test_predictions.csv"]
    assert read_checkpoint(out / "last.pt")["metadata"]["world_size"] == 2
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("cli-ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["data.train_size"] == "24"
