"""Training gives bitwise the same numbers on every machine: the golden run (the cpu preset, two epochs
on 256 real crystals, one thread; ``benchmarks.perf.reproducibility.golden_training``) ends with the
weights and the test MAE committed in ``golden_training.json``, with the CPU kernels and as torch
operations. CI runs on whichever machine it gets, so these tests check the portable numerics
(``cgat_dgl.numerics``) across the CPUs the project meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.perf.reproducibility import GOLDEN_VALUES, golden_training
from cgat_dgl import numerics
from cgat_dgl import kernels


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN_VALUES.read_text(encoding="utf-8"))


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _check(result: dict, expected: dict, path: str, made_on: str) -> None:
    here = f"{numerics.cpu_model()} ({numerics.isa_level()})"
    assert result["weights_sha256"] == expected["weights_sha256"], (
        f"{path}: the golden run's final weights differ on {here} from those made on {made_on} "
        f"(train MAE by epoch {result['train_mae']} here, {expected['train_mae']} there)"
    )
    assert result["test_mae"] == expected["test_mae"], f"{path}: test MAE {result['test_mae']!r} on {here}"


def test_golden_numerics_are_portable() -> None:
    assert numerics.portable(), f"the tests run without the portable numeric settings: {numerics.tags()}"


def test_golden_training_with_kernels(golden: dict, shared_data_path: Path, tmp_path: Path, one_thread) -> None:
    assert kernels.available(), "the CPU kernels did not build here"
    result = golden_training(shared_data_path, tmp_path)
    _check(result, golden["kernels"], "with the CPU kernels", golden["made_on"])


def test_golden_training_as_torch_operations(golden: dict, shared_data_path: Path, tmp_path: Path, one_thread) -> None:
    with kernels.turned_off():
        result = golden_training(shared_data_path, tmp_path)
    _check(result, golden["torch_ops"], "as torch operations", golden["made_on"])


def test_openblas_is_fixed_to_avx2_kernels_only_where_the_host_runs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in numerics.PORTABLE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(numerics.MODE_ENV, raising=False)
    monkeypatch.setattr(numerics, "runs_kernel_isa", lambda: False)  # a CPU without AVX2
    numerics.pin()
    assert "OPENBLAS_CORETYPE" not in os.environ  # Haswell kernels would fault there
    assert os.environ["NPY_DISABLE_CPU_FEATURES"] == numerics.PORTABLE_SETTINGS["NPY_DISABLE_CPU_FEATURES"]
    monkeypatch.setattr(numerics, "runs_kernel_isa", lambda: True)
    numerics.pin()
    assert os.environ["OPENBLAS_CORETYPE"] == numerics.PORTABLE_OPENBLAS
