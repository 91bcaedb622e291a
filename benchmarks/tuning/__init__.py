"""Optuna studies over learning rate and weight decay, tracked in MLflow (``cgat-bench tune``)."""

from benchmarks.tuning.artifacts import compare_studies, write_comparison, write_summary
from benchmarks.tuning.cli import add_tune_parser, tune_main
from benchmarks.tuning.inputs import InputOptions, TrialInputs, prepare_inputs
from benchmarks.tuning.space import SearchSpace, StudyConfigError
from benchmarks.tuning.storage import HeartbeatSettings, default_storage_url, open_storage
from benchmarks.tuning.study import StudyResult, TuneOptions, run_study, strategy_specs

__all__ = [
    "HeartbeatSettings",
    "InputOptions",
    "SearchSpace",
    "StudyConfigError",
    "StudyResult",
    "TrialInputs",
    "TuneOptions",
    "add_tune_parser",
    "compare_studies",
    "default_storage_url",
    "open_storage",
    "prepare_inputs",
    "run_study",
    "strategy_specs",
    "tune_main",
    "write_comparison",
    "write_summary",
]
