"""The experiment manifest (``experiments.yaml``): datasets, transfer tasks, sizes, seeds, profiles, studies.

Validated before anything runs; a typo or a wrong type is reported with the field and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from benchmarks.yaml_lines import line_of, load_yaml_with_lines
from cgat_dgl.model.config import ModelConfig
from cgat_dgl.training.config import ScheduleName, Strategy, TrainConfig
from cgat_dgl.strategies import PaperStrategy, UnknownName, strategy

Size = int | float  # an int is a count of structures, a float in (0, 1] a fraction of the available set


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    path: str = "../shared/data/mp_multifidelity.jsonl.gz"
    cache_dir: str = "cache"
    # neighbours per atom of the graphs; each profile's model must use the same (checked when planning)
    max_nbr: int = Field(ModelConfig.model_fields["max_nbr"].default, ge=1)
    split_seed: int = 0
    on_error: Literal["raise", "skip"] = "skip"
    # Properties whose validation and test materials no pre-training may see, besides every task's own
    # target and the default high-fidelity ones the data holds (cgat_dgl.data.leakage.DEFAULT_PROTECTED).
    # A name the data does not offer is an error when the data is loaded.
    protected_targets: list[str] = Field(default_factory=list)


def _train_default(name: str) -> Any:
    """A training setting's default, declared once, in ``TrainConfig``."""
    return TrainConfig.model_fields[name].default


class StageSpec(Strict):
    """Training settings of one stage (pre-training or transfer) in a profile: ``epochs`` is the cap
    when ``patience`` is set (early stopping on a validation plateau), the fixed length otherwise."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(_train_default("batch_size"), ge=1)
    lr: float = Field(_train_default("lr"), gt=0)
    weight_decay: float = Field(_train_default("weight_decay"), ge=0)
    cycle_period: int = Field(_train_default("cycle_period"), ge=1)  # the triangular schedule's
    normalization: Literal["keep", "refit"] = _train_default("normalization")
    schedule: ScheduleName = _train_default("schedule")
    warmup_epochs: int = Field(_train_default("warmup_epochs"), ge=0)
    min_lr_factor: float = Field(_train_default("min_lr_factor"), gt=0, le=1)
    anneal_epochs: int | None = Field(_train_default("anneal_epochs"), ge=1)
    epoch_structures: int | None = Field(_train_default("epoch_structures"), ge=1)
    lr_patience: int = Field(_train_default("lr_patience"), ge=1)
    lr_decay: float = Field(_train_default("lr_decay"), gt=0, lt=1)
    patience: int | None = Field(_train_default("patience"), ge=1)
    min_delta: float = Field(_train_default("min_delta"), ge=0, lt=1)

    @model_validator(mode="after")
    def _trainable(self) -> "StageSpec":
        TrainConfig(**self.model_dump())  # the training config's own checks, reported with the manifest line
        return self


class Profile(Strict):
    model: Literal["smoke", "cpu", "paper"]
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    backend: Literal["dgl", "torch"] = "dgl"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    amp: bool = False
    # Torch intra-op threads: floating-point reductions (e.g. a Linear's weight gradient) differ with
    # the thread count, so a profile pins it for results that do not depend on the machine's cores.
    threads: int | None = Field(None, ge=1)
    # Training processes sharing the store when `cgat-bench run` gets no --workers: on a few cores,
    # single-threaded workers side by side train more structures per second than one threaded one.
    workers: int = Field(1, ge=1)
    pretrain: StageSpec
    transfer: StageSpec
    pretrain_seed: int = 0
    # Caps applied to every size of every experiment (a smoke profile runs the same manifest small).
    max_train_size: int | None = Field(None, ge=1)
    max_pretrain_size: int | None = Field(None, ge=1)
    max_eval_size: int | None = Field(None, ge=1)
    seeds: list[int] | None = None  # overrides every experiment's seeds
    # A profile that only checks the pipeline (runs far from converged): its report states no verdicts.
    pipeline_check: bool = False


class Experiment(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: str  # low-fidelity (pre-training) property
    target: str  # high-fidelity property
    strategies: list[Strategy] = Field(default_factory=lambda: ["none", "head", "full"], min_length=1)
    train_sizes: list[Size] = Field(default_factory=lambda: [1.0], min_length=1)
    pretrain_sizes: list[Size] = Field(default_factory=lambda: [1.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # Learning-rate factor of transfer runs (the paper needed 10x smaller for inter-property transfer).
    transfer_lr_factor: float = Field(1.0, gt=0)
    # The target normalisation of transfer runs, replacing the profile's: "keep" loads the pre-training
    # mean/std with the weights (the reference), "refit" uses the new data's, which matters when the
    # source is another property in other units (a volume model transferred to formation energies).
    transfer_normalization: Literal["keep", "refit"] | None = None
    # Extra test metrics on subsets of the test set, e.g. band gaps above 0.1 eV: {gap_above_0.1: 0.1}.
    subsets_above: dict[str, float] = Field(default_factory=dict)
    # Multi-fidelity strategies: source structures per target structure in each epoch (drawn anew
    # from the source pool every epoch), so that the small target fidelity is not drowned.
    source_ratio: float = Field(2.0, gt=0)
    # Every training material of the target, whatever the profile's max_train_size.
    uncapped: bool = False
    # Only materials whose target value is above this train, validate and test (the paper's band gaps
    # above 0.1 eV, on which it trained too); the pre-training is the same.
    target_above: float | None = None
    # A group of experiments run and reported together (`cgat-bench run --suite`, `report --suite`).
    suite: str = Field("paper", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""

    @field_validator("train_sizes", "pretrain_sizes")
    @classmethod
    def _sizes(cls, sizes: list[Size]) -> list[Size]:
        for size in sizes:
            if isinstance(size, float) and not 0 < size <= 1:
                raise ValueError(f"a fractional size must be in (0, 1], got {size}")
            if isinstance(size, int) and size < 1:
                raise ValueError(f"a size must be at least 1, got {size}")
        return sizes

    @model_validator(mode="after")
    def _same_quantity(self) -> "Experiment":
        # a correction, a second fidelity or a prediction of one quantity needs a source and target of
        # one kind (a gap and a gap, not a volume and an energy)
        needing = [s for s in self.strategies if strategy(s).same_quantity_only]
        if needing and self.task_type != "intra":
            raise ValueError(
                f"strategies {needing} learn a correction or a second fidelity of one quantity; "
                f"{self.source} -> {self.target} changes the quantity"
            )
        for name in self.strategies:
            required = strategy(name).requires
            if required is not None and required not in self.strategies:
                raise ValueError(f"{name} starts from the {required} runs: list {required} too")
        return self

    @property
    def task_type(self) -> Literal["intra", "inter"]:
        return "intra" if property_kind(self.source) == property_kind(self.target) else "inter"


class StudySpec(Strict):
    """An Optuna study over learning rate and weight decay for one transfer task and strategy."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    experiment: str  # the experiment whose task (source, target, largest sizes) is tuned
    strategy: PaperStrategy
    n_trials: int = Field(ge=1)
    sampler: Literal["tpe", "grid", "random"] = "tpe"
    lr: tuple[float, float] | list[float] = (1.25e-6, 1.25e-4)  # a range (log-uniform) or, for grid, values
    # lr given as factors of the task's own default rate (the profile's, times the experiment's
    # transfer_lr_factor for a transfer), so that every strategy gets the same relative grid: the
    # paper's ablation is the default and a tenth of it
    lr_relative: bool = False
    weight_decay: tuple[float, float] | list[float] = (1e-6, 1e-2)
    pruner: Literal["median", "hyperband", "none"] = "median"
    train_size: Size = 1.0
    seed: int = 0


class Manifest(Strict):
    data: DataSpec = Field(default_factory=DataSpec)
    profiles: dict[str, Profile]
    # Test MAE a pre-trained model of a property should reach (published accuracies on the same data):
    # a verdict that rests on a model missing its target by more than PRETRAIN_TARGET_SLACK is refused.
    pretrain_targets: dict[str, float] = Field(default_factory=dict)
    # Shipped pre-trained models (benchmarks.pretrained), relative to the manifest's folder.
    pretrained_models: str = "pretrained_models"
    experiments: list[Experiment] = Field(min_length=1)
    studies: list[StudySpec] = Field(default_factory=list)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Path | None = PrivateAttr(default=None)
    _lines: dict = PrivateAttr(default_factory=dict)

    def resolve(self, path: str | Path) -> Path:
        """A path of the manifest, relative to the manifest's own folder."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    @model_validator(mode="after")
    def _references(self) -> "Manifest":
        names = [e.name for e in self.experiments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"experiment names must be unique: {duplicates}")
        for study in self.studies:
            if study.experiment not in names:
                raise ValueError(f"study {study.name!r} names unknown experiment {study.experiment!r}")
        return self

    def where(self, *location: str | int) -> str:
        """``file:line: dotted.field`` of a value of the loaded manifest, for error messages."""
        line = line_of(tuple(location), self._lines) if self._lines else None
        field = ".".join(map(str, location))
        if self._path is None:
            return field
        return f"{self._path}:{line}: {field}" if line else f"{self._path}: {field}"

    def experiment(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise UnknownName(f"no experiment {name!r}; known: {[e.name for e in self.experiments]}")

    def study(self, name: str) -> StudySpec:
        for study in self.studies:
            if study.name == name:
                return study
        raise UnknownName(f"no study {name!r}; known: {[s.name for s in self.studies]}")

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise UnknownName(f"no profile {name!r}; known: {sorted(self.profiles)}")
        return self.profiles[name]

    def profile_name(self, name: str | None) -> str:
        """``name`` if given (and defined), else the manifest's only profile; with several, ask for one."""
        if name is None:
            if len(self.profiles) != 1:
                raise UnknownName(f"the manifest defines profiles {sorted(self.profiles)}: choose one with --profile")
            return next(iter(self.profiles))
        self.profile(name)
        return name


def property_kind(name: str) -> str:
    """The physical quantity of a property column: ``gap_hse`` -> ``gap``, ``e_form_r2scan`` -> ``e_form``."""
    return name.rsplit("_", 1)[0] if "_" in name else name


# How far above its target a pre-trained model's test MAE may lie before the verdicts resting on it
# become "not converged".
PRETRAIN_TARGET_SLACK = 1.5


class ManifestError(ValueError):
    pass


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; errors name the file, the field and its line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: the manifest must be a mapping with 'profiles' and 'experiments'")
    try:
        manifest = Manifest.model_validate(data)
        manifest._base_dir = path.resolve().parent
        manifest._path, manifest._lines = path, lines
        return manifest
    except ValidationError as error:
        messages = []
        for problem in error.errors():
            location = tuple(problem["loc"])
            # pydantic appends union member names (int, float) to the location; they are not YAML keys.
            yaml_location = tuple(part for part in location if not (isinstance(part, str) and part in {"int", "float", "tuple[float,float]", "list[float]"}))
            line = line_of(yaml_location, lines)
            field = ".".join(str(part) for part in yaml_location) or "(top level)"
            where = f"{path}:{line}" if line else str(path)
            messages.append(f"{where}: {field}: {problem['msg']}")
        raise ManifestError("invalid manifest\n  " + "\n  ".join(messages)) from None
