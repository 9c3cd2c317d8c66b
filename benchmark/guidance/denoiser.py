"""One denoiser, ``denoiser(x, t, y) -> model output``, that evaluates any guidance method spec.

Unguided specs return the bare fine-tuned model's output. Otherwise, per call:

- forwards that are not needed are skipped: a guide whose scale is at its unguided value never runs, and no guide
  runs at a step where no sample's t is inside the guidance interval;
- forwards of the same model are one batched call: the fine-tuned model's conditional and null predictions (CFG) are
  one batch-2B forward, as in the DiT reference code; cfg+dog is one 2B call of the fine-tuned model and one B call of
  the pre-trained model;
- only the first ``guided_channels`` eps channels get the method's rule (3 of 4 latent channels, as the DiT reference
  code does; None: all); the other eps channels and the learned-variance channels come from the conditional
  prediction, as does every sample whose t is outside the interval.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from benchmark.guidance.method import FINETUNED, MethodSpec
from benchmark.guidance.projection import ETA, NORM_THRESHOLD, project_update
from benchmark.guidance.scale import DEFAULT_GUIDED_CHANNELS


class GuidedDenoiser(nn.Module):
    """``models`` maps each model the spec needs (``spec.models()``) to a callable ``model(x, t, y)``; a model called
    with its null label needs ``null_labels[name]`` or a ``null_label`` attribute (DiT's is its class count).
    ``alphas_cumprod`` (alpha_bar for every training timestep t) is needed by APG only."""

    def __init__(self, spec: MethodSpec, models: Mapping[str, Callable[..., Tensor]], *,
                 null_labels: Optional[Mapping[str, int]] = None,
                 guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS, alphas_cumprod: Optional[Tensor] = None):
        super().__init__()
        missing = [name for name in spec.models() if name not in models]
        if missing:
            raise ValueError(f"{spec.describe()} needs the {' and '.join(missing)} model; pass it to the denoiser")
        self.spec = spec
        self.models = {name: models[name] for name in spec.models()}
        self.model = models[FINETUNED]
        self.guided_channels = guided_channels
        # model -> the labels it is called with; the fine-tuned model's conditional call comes first
        self.plan: dict[str, list[str]] = {FINETUNED: ["cond"]}
        for g in spec.active_guides:
            labels = self.plan.setdefault(g.model, [])
            if g.label not in labels:
                labels.append(g.label)
        self.null_labels: dict[str, int] = {}
        for name, labels in self.plan.items():
            if "null" in labels:
                label = (null_labels or {}).get(name, getattr(self.models[name], "null_label", None))
                if label is None:
                    raise ValueError(f"{spec.describe()} calls the {name} model with its null label; give its "
                                     f"null_label")
                self.null_labels[name] = int(label)
        if spec.projected and alphas_cumprod is None:
            raise ValueError(f"{spec.describe()}: APG works on the denoised prediction and needs the noise schedule "
                             f"(alphas_cumprod)")
        self.alphas_cumprod = None if alphas_cumprod is None else torch.as_tensor(alphas_cumprod, dtype=torch.float64)

    @property
    def guided(self) -> bool:
        return self.spec.guided

    @property
    def interval(self):
        return self.spec.interval

    def predictions(self, x: Tensor, t: Tensor, y: Tensor) -> dict[tuple[str, str], Tensor]:
        """(model, label) -> output, one forward per model (its calls concatenated along the batch)."""
        out = {}
        for name, labels in self.plan.items():
            model = self.models[name]
            ys = [y if label == "cond" else torch.full_like(y, self.null_labels[name]) for label in labels]
            if len(ys) == 1:
                out[(name, labels[0])] = model(x, t, ys[0])
            else:
                k = len(ys)
                chunks = model(torch.cat([x] * k), torch.cat([t] * k), torch.cat(ys)).chunk(k)
                out.update(zip(((name, label) for label in labels), chunks))
        return out

    def alpha_bar(self, t: Tensor) -> Tensor:
        return self.alphas_cumprod.to(t.device)[t.long()]

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if not self.guided:
            return self.model(x, t, y)
        inside = None
        if self.interval is not None:
            inside = self.interval.mask(t)
            if not bool(inside.any()):  # one host sync per step, only when an interval is used
                return self.model(x, t, y)
        preds = self.predictions(x, t, y)
        cond = preds[(FINETUNED, "cond")]
        n = x.shape[1] if self.guided_channels is None else min(self.guided_channels, x.shape[1])
        eps = cond[:, :n]
        active = set(self.spec.active_guides)
        # a guide that is off contributes a zero update, so the rule needs no case for it
        deltas = {g.name: eps - preds[(g.model, g.label)][:, :n] if g in active else torch.zeros_like(eps)
                  for g in self.spec.method.guides}
        if self.spec.projected:
            alpha_bar, params = self.alpha_bar(t), self.spec.params
            deltas = {g.name: project_update(deltas[g.name], eps, x[:, :n], alpha_bar, params[ETA],
                                             params[NORM_THRESHOLD]) if g in active else deltas[g.name]
                      for g in self.spec.method.guides}
        guided = self.spec.method.rule(eps, deltas, self.spec.params)
        out = torch.cat([guided, cond[:, n:]], dim=1)
        if inside is not None:
            out = torch.where(inside.view(-1, *([1] * (out.dim() - 1))), out, cond)
        return out
