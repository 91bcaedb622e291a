"""AdamW, with the update of a group of float32 CPU parameters done by one kernel call.

torch's AdamW on CPU runs some ten tensor operations per parameter, each dispatched on its own; for
the cpu model's 139 small parameters that is most of the optimiser's time and about a twentieth of a
training step. ``AdamW`` is ``torch.optim.AdamW`` (same arguments, state, ``state_dict`` and hooks)
whose step, where the CPU kernels apply, updates each parameter group in one call to
``kernels.adamw_step``; elsewhere (GPU, float64, amsgrad, maximize, ...) torch's step runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cgat_dgl import kernels


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose CPU step updates a whole parameter group in one kernel call."""

    def _kernel_applies(self) -> bool:
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]:
                return False
            if group.get("fused") or isinstance(group["lr"], torch.Tensor):
                return False
            for p in group["params"]:
                if p.grad is not None and not (
                    kernels.applies(p, "adamw") and p.is_contiguous() and p.grad.layout == torch.strided
                ):
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if not self._kernel_applies():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # as torch's AdamW initialises it
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad.contiguous())
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if params:
                beta1, beta2 = group["betas"]
                kernels.load().adamw_step(
                    params, grads, exp_avgs, exp_avg_sqs, steps,
                    float(group["lr"]), beta1, beta2, group["eps"], group["weight_decay"],
                )  # fmt: skip
        return loss
