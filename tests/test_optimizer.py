"""The project's AdamW (one kernel call per parameter group on CPU) against torch's."""

from __future__ import annotations

import copy

import pytest
import torch

from cgat_dgl import kernels
from cgat_dgl.training.optimizer import AdamW


def twin_parameters(dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    first = [torch.randn(100, 7, dtype=dtype), torch.randn(33, dtype=dtype), torch.randn(40_000, dtype=dtype)]
    return [t.clone().requires_grad_() for t in first], [t.clone().requires_grad_() for t in first]


def groups(params: list[torch.Tensor]) -> list[dict[str, object]]:
    return [{"params": params[:2], "lr": 1e-2}, {"params": params[2:], "lr": 3e-3}]


def run(optimizers: list[torch.optim.Optimizer], params: list[list[torch.Tensor]], steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        grads = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in params[0]]
        for group in params:
            for t, g in zip(group, grads):
                # A parameter without a gradient in a step is skipped, as torch's AdamW skips it.
                t.grad = None if (step % 7 == 3 and t is group[1]) else g.clone()
        for optimizer in optimizers:
            optimizer.step()


def test_steps_equal_torch_adamw_with_groups_and_skipped_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    ours_params, torch_params = twin_parameters()
    ours = AdamW(groups(ours_params), weight_decay=1e-2)
    reference = torch.optim.AdamW(groups(torch_params), weight_decay=1e-2)
    calls: list[int] = []
    kernel = kernels.load().adamw_step
    monkeypatch.setattr(kernels, "load", lambda: type("K", (), {"adamw_step": lambda *a: calls.append(1) or kernel(*a)}))
    run([ours, reference], [ours_params, torch_params], steps=40)
    assert len(calls) == 2 * 40, "the kernel did not update every group at every step"
    for a, b in zip(ours_params, torch_params):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-7)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(ours.state[a][key], reference.state[b][key], rtol=2e-6, atol=1e-9)
    assert float(ours.state[ours_params[1]]["step"]) == float(reference.state[torch_params[1]]["step"]) < 40


def test_state_dicts_are_interchangeable_with_torch_adamw() -> None:
    ours_params, torch_params = twin_parameters()
    ours = AdamW(groups(ours_params), weight_decay=1e-2)
    run([ours], [ours_params], steps=5)
    reference = torch.optim.AdamW(groups(torch_params), weight_decay=1e-2)
    with torch.no_grad():
        for a, b in zip(ours_params, torch_params):
            b.copy_(a)
    reference.load_state_dict(copy.deepcopy(ours.state_dict()))  # loading keeps the tensors it is given
    resumed = AdamW(groups([t.detach().clone().requires_grad_() for t in ours_params]), weight_decay=1e-2)
    resumed.load_state_dict(copy.deepcopy(reference.state_dict()))
    resumed_params = [p for g in resumed.param_groups for p in g["params"]]
    run([ours, reference, resumed], [ours_params, torch_params, resumed_params], steps=5, seed=2)
    for a, b, c in zip(ours_params, torch_params, resumed_params):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(a, c, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["float64", "amsgrad", "kernels off"])
def test_torch_step_runs_where_the_kernel_does_not_apply(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ours_params, torch_params = twin_parameters(torch.float64 if case == "float64" else torch.float32)
    options = {"amsgrad": True} if case == "amsgrad" else {}
    if case == "kernels off":
        monkeypatch.setenv(kernels.ENABLE_ENV, "0")
    monkeypatch.setattr(kernels, "load", lambda: pytest.fail("the kernel ran"))
    ours = AdamW(groups(ours_params), weight_decay=1e-2, **options)
    reference = torch.optim.AdamW(groups(torch_params), weight_decay=1e-2, **options)
    run([ours, reference], [ours_params, torch_params], steps=3)
    for a, b in zip(ours_params, torch_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
