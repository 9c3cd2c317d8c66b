"""DoG with one copy of the weights, as one forward over a mixed batch.

With a LoRA fine-tune (``benchmark.models.adapter``) DoG's guide is the fine-tune's own ``SourceView``: the same
module with the adapter off. The shipped path calls the two like any two models (``GuidedDenoiser``: the fine-tune's
batch, then the source view's batch with the adapter switched off). ``MixedBatchDenoiser`` is the alternative: one
forward over both batches, peft choosing the adapter per row (``AdaptedDiT.forward_mixed``). ``dogbench perf
--lora-rank R`` times both (``benchmark/perf_lora.py``). The mixed batch is faster on a CPU, where a batch of 2B uses
the cores better than two of B (as CFG's one call beats DoG's two there); on a GPU at the protocol's batch one call of
2B costs what two of B cost (DoG and CFG run at the same rate on an H200), so the mixed batch's gather and scatter per
adapted layer are pure overhead there, and the two forwards ship. This path is reached through ``mixed_batch``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from benchmark.guidance import FINETUNED, PRETRAINED, GuidedDenoiser
from benchmark.models.adapter import SourceView


class MixedBatchDenoiser(GuidedDenoiser):
    """``GuidedDenoiser`` whose fine-tuned and pre-trained calls are one forward when the pre-trained model is the
    fine-tune's own source view (other specs: as ``GuidedDenoiser``)."""

    def one_copy(self) -> bool:
        pre = self.models.get(PRETRAINED)
        return set(self.plan) == {FINETUNED, PRETRAINED} and isinstance(pre, SourceView) \
            and pre.adapted is self.models[FINETUNED]

    def predictions(self, x: Tensor, t: Tensor, y: Tensor, y_random: Optional[Tensor] = None,
                    guides: bool = True) -> dict[tuple[str, str], Tensor]:
        if not guides or not self.one_copy():
            return super().predictions(x, t, y, y_random, guides)
        calls = [(name, label) for name in (FINETUNED, PRETRAINED) for label in self.plan[name]]
        ys = [self._labels(name, label, y, y_random) for name, label in calls]
        k, adapted = len(calls), len(self.plan[FINETUNED]) * len(x)
        self.forwards += k
        out = self.models[FINETUNED].forward_mixed(torch.cat([x] * k), torch.cat([t] * k), torch.cat(ys), adapted)
        return dict(zip(calls, out.chunk(k)))


def mixed_batch(sampler):
    """``sampler`` (from ``build_sampler``) with its denoiser replaced by the mixed-batch one; returns it."""
    d = sampler.denoiser
    sampler.denoiser = MixedBatchDenoiser(d.spec, d.models, guided_channels=d.guided_channels,
                                          alphas_cumprod=d.alphas_cumprod, timesteps=d.steps.timesteps)
    return sampler
