"""Pre-trained models shipped with the project (``pretrained_models/`` beside the manifest), the way
matgl ships its pretrained_models: each a folder with the checkpoint (``model.pt``), a machine-readable
``card.json`` and a human page (``README.md``, with its learning curve).

A manifest's pre-training is served by a shipped model when the model's card matches it:
- ``identity``: property, size, seed, protected properties, size cap, split seed, and the numerics
  key (``cgat_dgl.numerics.key``: a model trained with other code paths serves no run of these);
- ``model_settings`` and ``train_settings``, the resolved model and training configs (presets and
  defaults filled in): every field both know is equal; a field the card lacks (added since) must
  be at its default, which by this project's rule keeps the earlier behaviour; fields that change
  only speed are left out;
- ``data_fingerprint``: the content hash of the data file;
- ``protected_ids_hash``: the validation and test materials kept out of its pool;
- ``sha256``: the checkpoint file's content hash, so a damaged or edited file is never used.
The model must also load into this code's model; one trained by another ``cgat_dgl`` version is used
when it does, with the versions named in the run's tags. A card that matches but fails a check is
reported and the pre-training runs instead; ``cgat-bench run --retrain-pretrained`` always trains.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from benchmarks.datasets import TaskData
from benchmarks.plan import PretrainRun, pretrain_identity
from cgat_dgl.model import ModelConfig
from cgat_dgl.training.config import TrainConfig
from cgat_dgl.model import CGAT
from cgat_dgl.training.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from cgat_dgl.training.tracking import Tracker
from cgat_dgl.training.run_state import BEST_NAME, LAST_NAME
from cgat_dgl.versions import software_versions, version_tags

log = logging.getLogger(__name__)

MODELS_DIR = "pretrained_models"
MODEL_FILE = "model.pt"
CARD_FILE = "card.json"
PAGE_FILE = "README.md"
CURVE_FILE = "learning_curve.png"
SHIPPED_TAG = "cgat.shipped_model"
RECREATE = "cgat-bench run experiments.yaml --profile {profile} --pretrain-only --retrain-pretrained"


class ModelCard(BaseModel):
    """What a shipped pre-trained model is, how good it is and how it was made."""

    model_config = ConfigDict(extra="forbid")

    name: str
    property: str
    preset: str
    profile: str
    pretrain_size: str  # as the manifest gives it: a count, or a fraction of the leakage-free pool
    n_train: int
    n_val: int
    n_test: int
    test_mae: float
    test_rmse: float
    test_r2: float
    val_mae: float
    target_mae: float | None  # the manifest's pretrain_targets entry for the property
    best_epoch: int  # counted from 1
    epochs_run: int
    epoch_cap: int
    stop_reason: str  # "plateau" or "cap"
    converged: bool
    train_seconds: float
    threads: int | None
    machine: str
    commit: str
    versions: dict[str, str]
    data_fingerprint: str
    protected_ids_hash: str
    identity: dict[str, Any]
    run_key: str
    sha256: str
    model_settings: dict[str, Any]  # the resolved ModelConfig
    train_settings: dict[str, Any]  # the resolved TrainConfig
    history: list[dict[str, float]]  # per epoch: epoch (from 0), train_mae, val_mae, lr
    command: str
    created: str


@dataclass(frozen=True)
class ShippedModel:
    folder: Path
    card: ModelCard

    @property
    def checkpoint(self) -> Path:
        return self.folder / MODEL_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ids_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def recreate_command(spec: PretrainRun) -> str:
    """The command that trains the model anew, with the replication's seed and split where not 0."""
    command = RECREATE.format(profile=spec.profile)
    if spec.seed != 0:
        command += f" --pretrain-seed {spec.seed}"
    if spec.split_seed != 0:
        command += f" --split-seed {spec.split_seed}"
    return command


def model_name(spec: PretrainRun) -> str:
    """``cpu-e_form_pbe`` for the whole pool, ``cpu-e_form_pbe-pool10`` for 10 % of it, and
    ``cpu-e_form_pbe-seed1`` / ``-split1`` for the replications (another initialisation, another split)."""
    name = f"{spec.profile}-{spec.prop}"
    if isinstance(spec.size, float) and spec.size < 1.0:
        name = f"{name}-pool{round(spec.size * 100)}"
    elif isinstance(spec.size, int):
        name = f"{name}-n{spec.size}"
    if spec.seed != 0:
        name = f"{name}-seed{spec.seed}"
    if spec.split_seed != 0:
        name = f"{name}-split{spec.split_seed}"
    return name


# Settings that change how fast a model trains, not what it learns.
SPEED_ONLY = {"backend", "implementation", "device", "num_workers", "checkpoint_every", "eval_batch_size", "threads"}


def resolved_configs(spec: PretrainRun) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pre-training's model and training configs with presets and defaults filled in."""
    from benchmarks.runner import model_config_for, train_config_for

    model = model_config_for(spec.model, spec.stage["backend"]).model_dump(mode="json")
    train = train_config_for(spec).model_dump(mode="json")
    return model, train


def config_differences(card: dict[str, Any], current: dict[str, Any], schema: type) -> dict[str, tuple[Any, Any]]:
    """{field: (card's, current)} for each setting that makes the card's model another one than
    ``current`` asks for; a field the card lacks counts as its default (it was added since)."""
    fields = schema.model_fields
    differences = {}
    for name in (set(card) | set(current)) - SPEED_ONLY:
        if name not in current:
            differences[name] = (card[name], None)  # a setting this code no longer has
            continue
        saved = card.get(name, fields[name].default if name in fields else None)
        if saved != current[name]:
            differences[name] = (saved, current[name])
    return differences


def read_cards(root: Path) -> list[ShippedModel]:
    """Every shipped model under ``root``; a card that does not parse is an error naming its file."""
    models = []
    for path in sorted(Path(root).glob(f"*/{CARD_FILE}")):
        try:
            card = ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path}: not a valid model card: {error}") from None
        models.append(ShippedModel(path.parent, card))
    return models


def find_shipped(spec: PretrainRun, root: Path, data: TaskData) -> ShippedModel | None:
    """The shipped model that serves ``spec``, or None; a candidate that fails a check is named in a
    warning (never used silently, never skipped silently)."""
    wanted = pretrain_identity(spec)
    model_config, train_config = resolved_configs(spec)
    for model in read_cards(root):
        card = model.card
        if card.identity != wanted or card.data_fingerprint != spec.data_key:
            continue
        differences = {**config_differences(card.model_settings, model_config, ModelConfig),
                       **config_differences(card.train_settings, train_config, TrainConfig)}
        if differences:
            log.info("shipped model %s: same data, other settings %s", model.folder, differences)
            continue
        problem = _check(model, spec, data)
        if problem is None:
            return model
        print(f"warning: shipped model {model.folder} not used: {problem}; training {spec.label}", flush=True)
    return None


def _check(model: ShippedModel, spec: PretrainRun, data: TaskData) -> str | None:
    card = model.card
    if not model.checkpoint.is_file():
        return f"{model.checkpoint} is missing"
    if file_sha256(model.checkpoint) != card.sha256:
        return f"{model.checkpoint}: its SHA-256 differs from the card's (damaged or replaced)"
    if ids_hash(data.protected_ids(spec.prop)) != card.protected_ids_hash:
        return "the protected validation and test materials differ from those it was trained without"
    from benchmarks.runner import model_config_for

    try:
        state = read_checkpoint(model.checkpoint)
        load_model_state(CGAT(model_config_for(spec.model, spec.stage["backend"])), state["model_state"], model.checkpoint)
    except Exception as error:  # any reason it cannot serve this code's model
        return f"it does not load into this version's model ({type(error).__name__}: {error})"
    return None


def install_shipped(model: ShippedModel, spec: PretrainRun, tracker: Tracker, work_dir: Path) -> None:
    """Make ``model`` the finished pre-training run of ``spec``: its checkpoint where transfers look
    for it, and an MLflow run with its card's curve, metrics and provenance."""
    card = model.card
    out = Path(work_dir) / "checkpoints" / spec.key
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / LAST_NAME, *out.glob("epoch_*.pt")]:  # of a killed pre-training of the same key
        stale.unlink(missing_ok=True)
    state = read_checkpoint(model.checkpoint)
    # transfers link to the pre-training run of this store, not the exporter's
    state["metadata"] = {**state.get("metadata", {}), "mlflow_run_id": tracker.run_id, "shipped_model": model.folder.name}
    save_checkpoint(state, out / BEST_NAME)
    current = software_versions()
    tags = {
        SHIPPED_TAG: model.folder.name,
        "cgat.shipped_sha256": card.sha256,
        "cgat.machine": card.machine,
        "cgat.torch_threads": str(card.threads) if card.threads is not None else "unset",
        "cgat.stop_reason": card.stop_reason,
        "cgat.converged": str(card.converged).lower(),
        # the run is this code's pre-training (its versions pair it with the transfers); the card's
        # versions say what trained the weights
        **version_tags(),
        **{f"cgat.shipped.version.{name}": value for name, value in card.versions.items()},
    }
    if card.versions.get("cgat_dgl") != current["cgat_dgl"]:
        tags["cgat.shipped_note"] = (
            f"trained by cgat_dgl {card.versions.get('cgat_dgl')}, used by {current['cgat_dgl']}: same configuration "
            "and data, and the weights load into this version's model"
        )
    tracker.set_tags(tags)
    tracker.log_params({"train_size": card.n_train, "pretrain_size": card.n_train, "val_size": card.n_val,
                        "test_size": card.n_test, "shipped_model": model.folder.name})
    tracker.log_config(model=card.model_settings, train=card.train_settings)
    for row in card.history:
        tracker.log_epoch(int(row["epoch"]), {name: row[name] for name in ("train_mae", "val_mae", "lr")})
    trained = float(sum(r.get("structures", 0) for r in card.history))
    tracker.log_metrics({
        "best_val_mae": card.val_mae, "best_epoch": card.best_epoch - 1, "epochs_run": card.epochs_run,
        # a pre-training starts from no other run: its total is its own, as when the runner trains it
        "train_seconds": card.train_seconds, "trained_structures": trained, "total_trained_structures": trained,
    })
    tracker.log_test({"mae": card.test_mae, "rmse": card.test_rmse, "r2": card.test_r2})
    tracker.log_artifact(out / BEST_NAME, "checkpoints")
    print(f"[shipped] {spec.label}: {model.folder} (test MAE {card.test_mae:.4g})", flush=True)


def export_model(
    spec: PretrainRun, run: Any, work_dir: Path, data: TaskData, root: Path, target_mae: float | None
) -> ModelCard:
    """Write the finished pre-training ``spec`` (its MLflow ``run``) as a shipped model under ``root``."""
    source = Path(work_dir) / "checkpoints" / spec.key
    best = read_checkpoint(source / BEST_NAME)
    last = read_checkpoint(source / LAST_NAME) if (source / LAST_NAME).is_file() else best
    name = model_name(spec)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    # the best weights with the whole run's history: the card's curve and the structures trained
    best["history"] = last["history"]
    save_checkpoint(best, folder / MODEL_FILE)
    metrics, tags = run.data.metrics, run.data.tags
    history = [{k: float(v) for k, v in row.items()} for row in last["history"]]
    train_seconds = float(last.get("train_seconds") or 0.0) or (run.info.end_time - run.info.start_time) / 1000
    train_set, val_set, test_set = data.pretrain_sets(spec.prop, spec.size, spec.cap, None)
    model_settings, train_settings = resolved_configs(spec)
    card = ModelCard(
        name=name,
        property=spec.prop,
        preset=str(spec.model["preset"]),
        profile=spec.profile,
        pretrain_size=str(spec.size),
        n_train=len(train_set),
        n_val=len(val_set),
        n_test=len(test_set),
        test_mae=metrics["test_mae"],
        test_rmse=metrics["test_rmse"],
        test_r2=metrics["test_r2"],
        val_mae=metrics["best_val_mae"],
        target_mae=target_mae,
        best_epoch=int(best["best_epoch"]) + 1,
        epochs_run=int(last["epoch"]),
        epoch_cap=int(spec.stage["epochs"]),
        stop_reason=tags.get("cgat.stop_reason", "cap"),
        converged=tags.get("cgat.converged") == "true",
        train_seconds=round(train_seconds, 1),
        threads=int(tags["cgat.torch_threads"]) if tags.get("cgat.torch_threads", "").isdigit() else None,
        machine=tags.get("cgat.machine", "unrecorded"),
        commit=tags.get("cgat.version.cgat_dgl_commit", "unrecorded"),
        versions={k.removeprefix("cgat.version."): v for k, v in tags.items() if k.startswith("cgat.version.")},
        data_fingerprint=spec.data_key,
        protected_ids_hash=ids_hash(data.protected_ids(spec.prop)),
        identity=pretrain_identity(spec),
        run_key=spec.key,
        sha256=file_sha256(folder / MODEL_FILE),
        model_settings=model_settings,
        train_settings=train_settings,
        history=history,
        command=recreate_command(spec),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    (folder / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    _plot_curve(card, folder / CURVE_FILE)
    (folder / PAGE_FILE).write_text(card_page(card), encoding="utf-8")
    return card


def _plot_curve(card: ModelCard, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in card.history]
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    axis.plot(epochs, [row["train_mae"] for row in card.history], label="train MAE")
    axis.plot(epochs, [row["val_mae"] for row in card.history], label="validation MAE")
    axis.axvline(card.best_epoch, color="grey", linestyle=":", label=f"best epoch ({card.best_epoch})")
    if card.target_mae is not None:
        axis.axhline(card.target_mae, color="black", linestyle="--", label=f"target test MAE ({card.target_mae:g})")
    axis.set(xlabel="epoch", ylabel=f"{card.property} MAE", yscale="log", title=card.name)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _pool_text(size: str) -> str:
    """"1.0" -> "100 % of the leakage-free pool", "5000" -> "5000 of the leakage-free pool"."""
    return f"{float(size):.0%} of the leakage-free pool" if "." in size else f"{size} of the leakage-free pool"


def card_page(card: ModelCard) -> str:
    target = "none set" if card.target_mae is None else f"{card.target_mae:g} (test MAE / target = {card.test_mae / card.target_mae:.2f})"
    hours, rest = divmod(int(card.train_seconds), 3600)
    rows = [
        ("property", f"`{card.property}`"),
        ("model preset", f"`{card.preset}` (manifest profile `{card.profile}`)"),
        ("training set", f"{card.n_train} structures ({_pool_text(card.pretrain_size)}); validation {card.n_val}, test {card.n_test}"),
        ("test MAE / RMSE / R²", f"{card.test_mae:.4g} / {card.test_rmse:.4g} / {card.test_r2:.4f}"),
        ("best validation MAE", f"{card.val_mae:.4g}"),
        ("target test MAE", target),
        ("epochs", f"best {card.best_epoch} of {card.epochs_run} run (cap {card.epoch_cap})"),
        ("stopped", "on a validation plateau (converged)" if card.converged else "at its epoch cap (not converged)"),
        ("training time", f"{hours} h {rest // 60} min on {card.machine}, {card.threads} thread(s)"),
        ("code", f"cgat_dgl {card.versions.get('cgat_dgl', '?')}, commit {card.commit}; torch {card.versions.get('torch', '?')}, dgl {card.versions.get('dgl', '?')}"),
        ("data fingerprint", f"`{card.data_fingerprint}`; protected ids `{card.protected_ids_hash}`"),
        ("checkpoint SHA-256", f"`{card.sha256}`"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""# {card.name}

A CGAT pre-trained on the PBE property `{card.property}` of the leakage-free pre-training pool (no
validation or test material of any transfer target). Written by `cgat-bench pretrained --export`
from the tracked run `{card.run_key}`; `card.json` holds the same facts for programs.

| | |
|---|---|
{table}

![learning curve]({CURVE_FILE})

Use it:

```bash
cgat predict --checkpoint pretrained_models/{card.name}/{MODEL_FILE} my_cifs/
cgat train --data DATA --property TARGET --init-checkpoint pretrained_models/{card.name}/{MODEL_FILE} --strategy full --out runs/transfer
```

`cgat-bench run` uses it for the pre-training it matches (same configuration, data and protected
materials). Re-create it (resumable; runs continue from their last checkpoint):

```bash
{card.command}
```
"""


def index_page(cards: list[ModelCard]) -> str:
    rows = "\n".join(
        f"| [{c.name}]({c.name}/{PAGE_FILE}) | `{c.property}` | {c.n_train} | {c.test_mae:.4g} | "
        f"{'–' if c.target_mae is None else f'{c.target_mae:g}'} | {c.best_epoch} / {c.epochs_run} | {c.stop_reason} | "
        f"{c.train_seconds / 60:.0f} min | {c.versions.get('cgat_dgl', '?')} | {'yes' if c.identity.get('numerics') else 'no'} |"
        for c in cards
    )
    return f"""# Pre-trained models

Written by `cgat-bench pretrained experiments.yaml --profile PROFILE --export`; `cgat-bench run` uses a
model whose card matches its pre-training (configuration, data fingerprint, protected materials,
checkpoint hash) instead of training it, and `--retrain-pretrained` trains it anew. A card holds the
numeric settings its model was trained with (`identity.numerics`, `cgat_dgl/numerics.py`); a card
without them (made before cgat_dgl 0.5.0) serves no run, and `make pretrain` re-creates its model.

| model | property | training structures | test MAE | target | best / run epochs | stopped | training time | cgat_dgl | numerics key |
|---|---|---|---|---|---|---|---|---|---|
{rows}
"""


def write_index(root: Path) -> None:
    cards = [model.card for model in read_cards(root)]
    (Path(root) / PAGE_FILE).write_text(index_page(cards), encoding="utf-8")

