"""The ``cgat`` command: train (or transfer), predict from CIF files, and compare transfer strategies.

Data-parallel training of one run: ``torchrun --nproc-per-node N -m cgat_dgl.cli train ... --ddp``,
or ``cgat train ... --ddp --nproc-per-node N``, which starts that torchrun command itself
(``torchrun --standalone``: one machine, a free port).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cgat_dgl.data.records import DataError
from cgat_dgl.data.units import column_name
from cgat_dgl.strategies import PAPER_STRATEGIES, strategies
from cgat_dgl.training.config import PAPER_CYCLES, PAPER_EPOCHS, paper_cycle_period

log = logging.getLogger("cgat_dgl.cli")

STRATEGIES = PAPER_STRATEGIES
ALL_STRATEGIES = strategies()
# training.config.ScheduleName, spelt out so that the parser imports no torch (tested equal)
SCHEDULES = ("triangular", "cosine", "plateau")


class HELP_FORMAT(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default where there is one and the help text does not already explain it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if any(action.default is skip for skip in (None, False, argparse.SUPPRESS)) or "default" in text:
            return text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _lr_factor(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GROUP=FACTOR (e.g. head=10), got {text!r}") from None


def _name_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated property names, got {text!r}")
    return names


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="JSON Lines (*.jsonl, optionally .gz/.bz2/.xz), a CGCNN folder (<id>.cif files and "
                             "id_prop.csv; a headerless id_prop.csv's one column is the property 'target'), or a "
                             "pymatgen ComputedStructureEntry list (*.json, optionally compressed)")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"), help="graph cache folder")
    parser.add_argument("--no-cache", action="store_true", help="build graphs without caching them")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 80/10/10 split")


def _add_model_options(parser: argparse.ArgumentParser, default_preset: str | None) -> None:
    parser.add_argument("--preset", choices=("paper", "cpu", "smoke"), default=default_preset,
                        help="model size" + ("" if default_preset else " (default: the init checkpoint's, else cpu)"))
    parser.add_argument("--backend", choices=("dgl", "torch"), default=None, help="message-passing backend")


def _add_optim_options(parser: argparse.ArgumentParser, batch_help: str = "crystals per batch") -> None:
    from cgat_dgl.training.config import TrainConfig

    # None: not given, so that the training config's own default applies (shown here)
    default = {name: TrainConfig.model_fields[name].default for name in ("batch_size", "lr", "weight_decay")}
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help=f"{batch_help} (default: {default['batch_size']})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate of the cycle (default: {default['lr']:g})")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"AdamW weight decay (default: {default['weight_decay']:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="auto: cuda if available")
    parser.add_argument("--amp", action="store_true", help="mixed precision (GPU only)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on busy or small machines)")


def _add_tracking_options(parser: argparse.ArgumentParser, experiment: str) -> None:
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under mlflow/)")
    parser.add_argument("--experiment", default=experiment, help="MLflow experiment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgat", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", formatter_class=HELP_FORMAT, help="train a model, or transfer one from a checkpoint")
    _add_data_options(train)
    train.add_argument("--property", required=True, help="target column, e.g. gap_pbe")
    _add_model_options(train, default_preset=None)
    _add_optim_options(train, batch_help="crystals per optimiser step; with --ddp the global batch, "
                                          "each of the N processes takes batch-size / N (N must divide it)")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help=f"default: {PAPER_EPOCHS['pretrain']} (paper), {PAPER_EPOCHS['transfer']} with --init-checkpoint")
    train.add_argument("--cycle-period", type=_positive_int, default=None,
                       help="epochs of one learning-rate cycle (default: the paper's share of the run's epochs, "
                            f"1/{PAPER_CYCLES['pretrain']}, 1/{PAPER_CYCLES['transfer']} with --init-checkpoint: "
                            f"{PAPER_EPOCHS['pretrain'] // PAPER_CYCLES['pretrain']} of {PAPER_EPOCHS['pretrain']} epochs)")
    train.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help="learning-rate schedule (default: triangular, the paper's cycle)")
    train.add_argument("--warmup-epochs", type=int, default=None, help="cosine and plateau: linear warm-up epochs")
    train.add_argument("--anneal-epochs", type=_positive_int, default=None,
                       help="cosine: anneal over this many epochs, then hold the floor rate (default: to --epochs)")
    train.add_argument("--epoch-structures", type=_positive_int, default=None,
                       help="each epoch draws at least this many structures, passing a smaller set several times")
    train.add_argument("--patience", type=_positive_int, default=None,
                       help="stop after this many epochs without a validation improvement (default: run to --epochs)")
    train.add_argument("--min-delta", type=float, default=None,
                       help="relative validation improvement that counts as one (default: 0)")
    train.add_argument("--train-size", type=_positive_int, default=None, help="use this many training materials (a fixed subset)")
    train.add_argument("--split", type=Path, default=None, help="split file (default: OUT/split.json), created if missing")
    train.add_argument("--init-checkpoint", type=Path, default=None, help="pre-trained checkpoint to transfer from")
    train.add_argument("--strategy", choices=STRATEGIES, default=None,
                       help="none: from scratch; head: train the output network only; full: all weights "
                            "(default: full with --init-checkpoint, else none)")
    train.add_argument("--normalization", choices=("keep", "refit"), default="keep",
                       help="on transfer: keep the checkpoint's target mean/std or refit them")
    train.add_argument("--freeze", nargs="+", default=[], metavar="GROUP",
                       help="module groups to freeze (embedding, message_passing, roost, pooling, head)")
    train.add_argument("--lr-factor", type=_lr_factor, nargs="+", default=[], metavar="GROUP=F",
                       help="per-group learning-rate factors")
    train.add_argument("--checkpoint-every", type=int, default=0, help="also keep OUT/epoch_N.pt every N epochs (0: never)")
    train.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, split)")
    train.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    train.add_argument("--ddp", action="store_true",
                       help="data-parallel training of this one run (DistributedDataParallel; gloo on CPU, NCCL on "
                            "GPU, one GPU per process): run under torchrun (torchrun --nproc-per-node N -m "
                            "cgat_dgl.cli train ... --ddp), or add --nproc-per-node. Rank 0 alone writes the "
                            "checkpoints and the MLflow run; every rank resumes from OUT/last.pt")
    train.add_argument("--nproc-per-node", type=_positive_int, default=None, metavar="N",
                       help="with --ddp outside torchrun: start N processes on this machine through torchrun "
                            "--standalone (on CPU give --threads too: the cores are shared)")
    _add_tracking_options(train, "cgat")
    train.set_defaults(handler=run_train)

    predict = commands.add_parser("predict", formatter_class=HELP_FORMAT, help="predict the property of CIF files with a checkpoint")
    predict.add_argument("--checkpoint", required=True,
                         help="a trained model: best.pt of a cgat train or cgat-bench run folder, a shipped model's "
                              "model.pt, or a registered one, models:/NAME/VERSION (e.g. models:/cgat-cpu-gap_pbe/1)")
    predict.add_argument("--tracking-uri", default=None,
                         help="the store of a models:/ checkpoint (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db)")
    predict.add_argument("paths", nargs="+", type=Path, metavar="FILES_OR_FOLDER", help="CIF files or folders of them")
    predict.add_argument("--out", type=Path, default=None,
                         help="write the CSV (id and the property, with its unit where known) here instead of stdout")
    predict.add_argument("--batch-size", type=_positive_int, default=256, help="crystals per batch")
    predict.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="auto: cuda if available")
    predict.add_argument("--backend", choices=("dgl", "torch"), default=None)
    predict.set_defaults(handler=run_predict)

    compare = commands.add_parser(
        "compare", formatter_class=HELP_FORMAT,
        help="pre-train on SOURCE, transfer to TARGET with each strategy, beside the baselines",
        description="A one-experiment manifest, written to OUT/experiments.yaml and run by `cgat-bench run` "
                    "(run keys, resume, store and report beside it). Settings it does not offer (data-loader "
                    "workers, a given pre-trained checkpoint, capped evaluation sets) are a manifest's: edit that "
                    "file and run it with cgat-bench.")
    compare.add_argument("--data", type=Path, required=True, help="data file or folder (as for cgat train)")
    compare.add_argument("--cache-dir", type=Path, default=None, help="graph cache folder (default: ./cache)")
    compare.add_argument("--split-seed", type=int, default=None, help="seed of the 80/10/10 split (default: 0)")
    compare.add_argument("--source", required=True, help="pre-training (low-fidelity) property, e.g. gap_pbe")
    compare.add_argument("--target", required=True, help="transfer (high-fidelity) property, e.g. gap_hse")
    from cgat_dgl.data.leakage import DEFAULT_PROTECTED

    compare.add_argument("--protect", type=_name_list, default=None, metavar="A,B",
                         help="further properties whose validation and test materials the pre-training must not "
                              f"see (the target and {', '.join(DEFAULT_PROTECTED)}, where the data has them, "
                              "always are)")
    # None everywhere: not given, so that the compare options' own defaults (shown by --help there) apply
    compare.add_argument("--preset", choices=("paper", "cpu", "smoke"), default=None, help="model size (default: cpu)")
    compare.add_argument("--backend", choices=("dgl", "torch"), default=None, help="message-passing backend")
    compare.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None, help="default: auto")
    compare.add_argument("--amp", action="store_true", default=None, help="mixed precision (GPU only)")
    compare.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads of each run")
    compare.add_argument("--seed", type=int, default=None, help="seed of weights and shuffling (default: 0)")
    compare.add_argument("--pretrain-epochs", type=_positive_int, default=None, help="epochs of the pre-training (default: 10)")
    compare.add_argument("--pretrain-size", type=int, default=None,
                         help="pre-training materials, a fixed subset of the leakage-free training split "
                              "(default: 8000; 0 = all)")
    compare.add_argument("--epochs", type=_positive_int, default=None, help="epochs of each transfer run (default: 20)")
    compare.add_argument("--lr", type=float, default=None, help="peak learning rate of the cycle (default: 0.001)")
    compare.add_argument("--transfer-lr", type=float, default=None, help="learning rate of the transfer runs (default: --lr)")
    compare.add_argument("--batch-size", type=_positive_int, default=None, help="crystals per batch")
    compare.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    compare.add_argument("--cycle-period", type=_positive_int, default=None,
                         help="learning-rate cycle of every run (default: the run's epochs, one rise and fall)")
    compare.add_argument("--patience", type=_positive_int, default=None,
                         help="stop a run after this many epochs without a better validation error (default: none)")
    compare.add_argument("--strategies", nargs="+", default=None, metavar="NAME",
                         help="strategies to run (default: none, head, full and the baselines that apply); "
                              f"any of {', '.join(ALL_STRATEGIES)}")
    compare.add_argument("--normalization", choices=("keep", "refit"), default=None,
                         help="transfers keep the pre-training target mean/std (default) or refit them")
    compare.add_argument("--out", type=Path, default=None, help="output folder (default: runs/compare)")
    compare.add_argument("--tracking-uri", default=None,
                         help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else OUT/mlflow/mlflow.db)")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars: one plain line per run")
    compare.set_defaults(handler=run_compare)
    return parser


# --- train -------------------------------------------------------------------------------------
def _model_config(preset: str | None, backend: str | None, init_checkpoint: Path | None) -> Any:
    from cgat_dgl.model import ModelConfig
    from cgat_dgl.training.checkpoint import read_checkpoint

    if preset is None and init_checkpoint is not None:
        config = ModelConfig(**read_checkpoint(init_checkpoint)["model_config"])
    else:
        config = ModelConfig.preset(preset or "cpu")
    return config.model_copy(update={"backend": backend}) if backend else config


def _load(
    args: argparse.Namespace, properties: list[str], max_nbr: int, with_protected: bool = False, verbose: bool = True
) -> Any:
    """The data of ``properties``; ``with_protected`` adds the default protected (high-fidelity)
    properties the file offers, which the leakage rule of a pre-training split needs. ``verbose``:
    progress and the loading report (off on the data-parallel ranks other than 0)."""
    from cgat_dgl.data.dataset import load_dataset
    from cgat_dgl.data.leakage import load_with_protected
    from cgat_dgl.graphs.neighbors import GraphParams

    loaded = (load_with_protected if with_protected else load_dataset)(
        args.data,
        properties,
        params=GraphParams(max_nbr=max_nbr),
        cache_dir=None if args.no_cache else args.cache_dir,
        progress=verbose,
    )
    if verbose:
        print(loaded.report.summary(), file=sys.stderr)
    return loaded


def _print_result(result: Any, label: str = "") -> None:
    test = result.test
    test_text = f"test MAE {test['mae']:.4g}, RMSE {test['rmse']:.4g}, R2 {test['r2']:.3f}" if test else "no test set"
    print(
        f"{label}best epoch {result.best_epoch + 1}: val MAE {result.best_val_mae:.4g}; {test_text}; "
        f"{result.n_trainable} trainable / {result.n_frozen} frozen parameters; checkpoint {result.checkpoint}"
    )


def _launch_torchrun(args: argparse.Namespace) -> int:
    """Run this very command under ``torchrun --standalone --nproc-per-node N``; its processes see
    torchrun's environment and train as ranks instead of launching again."""
    if args.nproc_per_node is None or args.nproc_per_node < 1:
        raise SystemExit("cgat train --ddp: run under torchrun, or give --nproc-per-node N to start N processes here")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc_per_node}",
               "-m", "cgat_dgl.cli", *args.argv]
    print(f"starting {args.nproc_per_node} processes: {' '.join(command)}", file=sys.stderr)
    return subprocess.call(command)


def run_train(args: argparse.Namespace) -> int:
    from cgat_dgl.training import distributed

    if not args.ddp:
        if args.nproc_per_node is not None:
            raise SystemExit("cgat train: --nproc-per-node needs --ddp")
        return _train(args)
    if not distributed.launched_by_torchrun():
        return _launch_torchrun(args)
    with distributed.process_group(args.device):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    """One training run; with DDP, one rank of it (data and split prepared by rank 0 first)."""
    from cgat_dgl.data.splits import load_or_create_split, nested_subsets
    from cgat_dgl.training import distributed
    from cgat_dgl.training.config import train_config as training_config
    from cgat_dgl.training.tracking import Tracker, redact_uri
    from cgat_dgl.training.trainer import train

    transfer = args.init_checkpoint is not None
    strategy = args.strategy or ("full" if transfer else "none")
    model_config = _model_config(args.preset, args.backend, args.init_checkpoint)
    stage = "transfer" if transfer else "pretrain"
    epochs = args.epochs or PAPER_EPOCHS[stage]
    train_config = training_config(
        {name: getattr(args, name) for name in (
            "batch_size", "lr", "weight_decay", "seed", "device", "amp", "num_workers", "backend", "threads",
            "normalization", "checkpoint_every", "schedule", "warmup_epochs", "anneal_epochs", "patience",
            "min_delta", "epoch_structures",
        )},
        epochs=epochs,
        cycle_period=args.cycle_period or paper_cycle_period(epochs, stage),
        strategy=strategy,
        freeze=args.freeze,
        lr_factors=dict(args.lr_factor),
    )
    main = distributed.is_main()  # every process without DDP
    with distributed.main_first():  # rank 0 builds the graph cache and the split file; the others read them
        loaded = _load(args, [args.property], model_config.max_nbr, verbose=main)
        dataset = loaded.dataset(args.property)
        if len(dataset) < 3:
            raise SystemExit(f"{args.data}: only {len(dataset)} materials have {args.property!r}; need at least 3")
        split = load_or_create_split(args.split or args.out / "split.json", sorted(dataset.ids), args.split_seed)
    train_ids = list(split.train)
    if args.train_size is not None and args.train_size > len(train_ids):
        raise SystemExit(f"--train-size {args.train_size}: {args.property} has {len(train_ids)} training materials "
                         f"in this split; give at most {len(train_ids)}, or leave it out for all of them")
    if args.train_size is not None and args.train_size < len(train_ids):
        train_ids = list(nested_subsets(split.train, [args.train_size], seed=args.split_seed)[args.train_size])
    train_set = loaded.dataset(args.property, train_ids)
    val_set = loaded.dataset(args.property, list(split.val))
    test_set = loaded.dataset(args.property, list(split.test))
    if main:
        print(f"{args.property}: {len(train_set)} train, {len(val_set)} val, {len(test_set)} test", file=sys.stderr)

    from cgat_dgl.graphs.neighbors import GraphParams

    metadata = {
        "property": args.property,
        "data": str(args.data),
        "graph_params": asdict(GraphParams(max_nbr=model_config.max_nbr)),
    }
    # One MLflow run, rank 0's: the other ranks train without a tracker.
    tracking: Any = (
        Tracker(f"{args.property} {strategy}", experiment=args.experiment, tracking_uri=args.tracking_uri)
        if main else contextlib.nullcontext(None)
    )
    with tracking as tracker:
        if tracker is not None:
            tracker.log_config(
                data={"path": str(args.data), "property": args.property, "train_size": len(train_set),
                      "val_size": len(val_set), "test_size": len(test_set), "split_seed": args.split_seed},
            )
        result = train(
            model_config, train_config, train_set, val_set, test_set,
            out_dir=args.out, init_checkpoint=args.init_checkpoint, tracker=tracker,
            resume=not args.no_resume, metadata=metadata, progress=True,
        )  # fmt: skip
    if tracker is not None:
        _print_result(result)
        print(f"mlflow run {tracker.run_id} in {redact_uri(tracker.tracking_uri)}")
    return 0


# --- predict -----------------------------------------------------------------------------------
def cif_files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".cif")
            if not inside:
                raise SystemExit(f"{path}: no .cif files in this folder")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    return found


def _file_ids(files: Sequence[Path]) -> list[str]:
    """File stems, or full paths where two stems collide."""
    stems = [f.stem for f in files]
    return [f.stem if stems.count(f.stem) == 1 else str(f) for f in files]


def run_predict(args: argparse.Namespace) -> int:
    from cgat_dgl.data.records import MaterialRecord
    from cgat_dgl.graphs.build import build_record_graph
    from cgat_dgl.graphs.neighbors import GraphParams
    from cgat_dgl.training.inference import load_checkpoint, predict
    from cgat_dgl.training.run_state import resolve_device

    from cgat_dgl.registry import resolve_checkpoint
    from cgat_dgl.training.tracking import resolve_tracking_uri

    checkpoint = resolve_checkpoint(
        args.checkpoint, resolve_tracking_uri(args.tracking_uri) if args.checkpoint.startswith("models:/") else None
    )
    model, normalizer, state = load_checkpoint(checkpoint, resolve_device(args.device), backend=args.backend)
    saved_params = state.get("metadata", {}).get("graph_params")
    params = GraphParams(**saved_params) if saved_params else GraphParams(max_nbr=model.config.max_nbr)
    files = cif_files(args.paths)
    items: list[tuple[Any, float]] = []
    failures = 0
    for path, material_id in zip(files, _file_ids(files)):
        try:
            record = MaterialRecord(material_id, str(path), {}, path.read_text(), "cif")
            items.append((build_record_graph(record, params), float("nan")))
        except (DataError, OSError, UnicodeDecodeError) as error:
            failures += 1
            print(f"error: {error if isinstance(error, DataError) else f'{path}: {error}'}", file=sys.stderr)
    if not items:
        raise SystemExit("no structure could be read")
    values = predict(model, normalizer, items, args.batch_size)
    prop = state.get("metadata", {}).get("property", "prediction")
    rows = [(graph.id, f"{value:.6g}") for (graph, _), value in zip(items, values)]
    stream = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["id", column_name(prop)])
        writer.writerows(rows)
    finally:
        if args.out:
            stream.close()
    if args.out:
        print(f"{len(rows)} predictions of {prop} written to {args.out}", file=sys.stderr)
    return 1 if failures else 0


# --- compare -----------------------------------------------------------------------------------
def run_compare(args: argparse.Namespace) -> int:
    from benchmarks.compare import CompareOptions, run_compare as compare

    given = {
        "source": args.source, "target": args.target, "data_path": args.data, "cache_dir": args.cache_dir,
        "out_dir": args.out, "protect": args.protect, "split_seed": args.split_seed, "preset": args.preset,
        "backend": args.backend, "device": args.device, "amp": args.amp, "threads": args.threads,
        "seed": args.seed, "pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "lr": args.lr,
        "transfer_lr": args.transfer_lr, "batch_size": args.batch_size, "weight_decay": args.weight_decay,
        "cycle_period": args.cycle_period, "patience": args.patience, "strategies": args.strategies,
        "normalization": args.normalization,
    }
    options = CompareOptions(**{name: value for name, value in given.items() if value is not None},
                             **({"pretrain_size": args.pretrain_size or None} if args.pretrain_size is not None else {}))
    return compare(options, tracking_uri=args.tracking_uri, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `cgat train --ddp` hands to torchrun
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if getattr(args, "threads", None) and args.command != "train":  # a training run sets its own
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.handler(args))
    except (DataError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"cgat {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
