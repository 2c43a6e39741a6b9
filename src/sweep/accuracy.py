"""Correctness of a runtime's outputs against PyTorch fp32 on the same inputs.

Random weights make a poor reference: a randomly initialised network maps every input to
nearly the same logits (resnet18 predicts one class for all random inputs), so top-1 agreement
would be 100% even for an adapter that feeds the channels in the wrong order. Two measures make
the reference decisive:

* the synthetic inputs are smooth random images (`synthetic_images`), not white noise: global
  average pooling turns white noise into the same features for every image;
* `make_decisive` re-fits the last Linear layer of a model with random weights (never a user's
  weights) so that its logits are a random projection of the *centred* features, scaled to unit
  variance: the prediction then depends on the input. Values change, shapes and FLOPs do not.
* agreement is counted only over samples whose reference top-1 margin is clear for the precision
  (TOLERANCE), so near-ties do not count either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# Per precision: the largest |logit error| allowed, relative to the reference logits' std; the
# least top-1 agreement; and the reference top-1 margin (same unit) that makes a sample decisive.
TOLERANCE = {"fp32": (5e-3, 100.0, 0.01), "tf32": (5e-2, 99.0, 0.1), "fp16": (5e-2, 99.0, 0.1),
             "bf16": (4e-1, 95.0, 0.5), "int8": (1.5, 80.0, 0.5)}


def synthetic_images(n: int, resolution: int | list[int] | tuple[int, int],
                     seed: int) -> torch.Tensor:
    """`n` smooth random images (normalised-input scale), fp32 on the CPU, reproducible: random
    4x4 colour fields upsampled to `resolution` (a side, or [height, width]), plus a little fine
    noise."""
    from sweep.config import size_of

    h, w = size_of(resolution)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, 4, 4, generator=gen)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear",
                                        align_corners=False)
    return x + 0.1 * torch.randn(n, 3, h, w, generator=gen)


def last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear layer to serve as its classifier")
    return linears[-1]


@torch.no_grad()
def make_decisive(model: nn.Module, calib: torch.Tensor, seed: int = 0) -> None:
    """Re-fit the classifier of a randomly initialised model so its predictions depend on the
    input (see the module docstring). `calib`: a batch of inputs like the job's."""
    head = last_linear(model)
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: feats.append(args[0].flatten(1)))
    try:
        model.eval()(calib)
    finally:
        hook.remove()
    f = torch.cat(feats).double()
    mu = f.mean(0)
    # one scale for all features: dividing each by its own spread would amplify features that
    # barely vary, and with them the rounding error of half precisions
    scale = (f - mu).pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(head.out_features, head.in_features, generator=gen, dtype=torch.float64)
    w = w / scale  # logits of unit variance across inputs
    head.weight.copy_(w.to(head.weight.dtype))
    if head.bias is not None:
        head.bias.copy_((-(w @ mu)).to(head.bias.dtype))


@dataclass
class Check:
    max_abs_err: float
    rel_err: float  # max_abs_err / std of the reference logits
    agreement_top1_pct: float  # over decisive samples; nan when there are none
    decisive_pct: float
    samples: int
    passed: bool
    reason: str

    def metrics(self) -> dict[str, float]:
        return {"max_abs_err": self.max_abs_err, "rel_err": self.rel_err,
                "agreement_top1_pct": self.agreement_top1_pct, "decisive_pct": self.decisive_pct,
                "check_samples": float(self.samples), "correct": float(self.passed)}


def compare(ref: torch.Tensor, out: torch.Tensor, precision: str) -> Check:
    """Judge `out` against the fp32 reference `ref` (both [N, classes], on the CPU)."""
    ref, out = ref.double(), out.double()
    if out.shape != ref.shape:
        return Check(math.inf, math.inf, 0.0, 0.0, ref.shape[0], False,
                     f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    tol, min_agree, margin = TOLERANCE[precision]
    scale = ref.std().item() or 1.0
    err = (out - ref).abs().max().item()
    rel = err / scale
    top2 = ref.topk(2, dim=1).values
    decisive = (top2[:, 0] - top2[:, 1]) > margin * scale
    n_dec = int(decisive.sum())
    agree = ((out.argmax(1) == ref.argmax(1)) & decisive).sum().item()
    agreement = 100.0 * agree / n_dec if n_dec else math.nan
    problems = []
    if not math.isfinite(rel) or rel > tol:
        problems.append(f"max |error| is {rel:.3g} x the logit std "
                        f"(allowed {tol:g} for {precision})")
    if n_dec and agreement < min_agree:
        problems.append(f"top-1 agreement {agreement:.1f}% on {n_dec} decisive samples "
                        f"(needs {min_agree:g}%)")
    reason = "; ".join(problems) or (
        "within tolerance" + ("" if n_dec else " (no decisive sample: agreement not judged)"))
    return Check(err, rel, agreement, 100.0 * n_dec / ref.shape[0], ref.shape[0], not problems,
                 reason)


def run_batches(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch: int,
                prepare: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Outputs of `fn` over `inputs` in chunks of `batch` (the shape the runtime was built for),
    copied to the CPU in fp32 right after each call."""
    outs = [fn(prepare(chunk)).float().cpu() for chunk in inputs.split(batch)]
    return torch.cat(outs)
