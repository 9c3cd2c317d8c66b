"""One denoiser, ``denoiser(x, t, y[, y_random]) -> model output``, that evaluates any guidance method spec.

Unguided specs return the bare fine-tuned model's output. Otherwise, per call:

- forwards that are not needed are skipped: a guide whose scale is at its unguided value never runs, and no guide
  runs at a step where no sample's schedule weight is above 0 (outside the guidance interval, the start of a ramp)
  or where every sample is in CFG-Zero*'s zero-init steps;
- forwards of the same model are one batched call: the fine-tuned model's conditional and null predictions (CFG) are
  one batch-2B forward, as in the DiT reference code; cfg+dog is one 2B call of the fine-tuned model and one B call of
  the pre-trained model; ICG's random-class call joins the conditional one the same way;
- each guide's update ``eps_c - eps_guide`` goes through the spec's combination rules (APG, CFG-Zero*, FDG), then the
  method's rule combines them (with ``at``, the step, for a rule that takes it), then the schedule weights the result;
- only the first ``guided_channels`` eps channels get all that (3 of 4 latent channels, as the DiT reference code
  does; None: all); the other eps channels and the learned-variance channels come from the conditional prediction.

``forwards`` counts the model forwards per image since ``start`` (a batch-2B call counts 2); ``nfe(spec, timesteps)``
predicts the same number from the spec and the sampled timesteps alone. Each rule output is checked on every call:
a rule that raises or returns another shape stops at once with one line naming the method, its module, the step and
the fix; non-finite values are flagged on the device (no wait) and raised by ``finish`` after the batch, before any
image is made from it.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from benchmark.errors import UserError, first_line
from benchmark.guidance.combine import Context, zero_velocity_eps
from benchmark.guidance.method import FINETUNED, RANDOM, MethodSpec
from benchmark.guidance.scale import DEFAULT_GUIDED_CHANNELS
from benchmark.guidance.schedule import CONSTANT, blend
from benchmark.guidance.steps import SamplingSteps, Step


class GuidanceRuleError(UserError):
    """A method's rule failed at a step (raised, returned another shape, or NaN/inf): one line naming the fix."""


def step_plan(spec: MethodSpec, steps: SamplingSteps, t: Tensor, index: Tensor):
    """Per sample: the schedule weight (None: 1 everywhere), CFG-Zero*'s zero-init mask (None: no zero-init), and
    whether the rule's output and the guides' forwards are wanted at all. The denoiser and ``nfe`` both decide here."""
    weight = spec.schedule_def.weight(t, steps.progress(index), spec.params)
    zeroed = index < spec.zero_steps if spec.zero_steps else None
    wanted = weight > 0 if weight is not None else torch.ones_like(index, dtype=torch.bool)
    guides = wanted & ~zeroed if zeroed is not None else wanted
    return weight, zeroed, wanted, guides


def nfe(spec: MethodSpec, timesteps: Optional[Sequence[int]] = None) -> int:
    """Model forwards per image of sampling ``spec`` over ``timesteps`` (the model timesteps a sampler visits; None:
    all 1000): per step 1 for the conditional prediction, plus one per guide call where the guides run (a batch-2B
    call counts 2). Unguided: the number of steps; DoG: twice that. What ``GuidedDenoiser.forwards`` counts."""
    steps = SamplingSteps(timesteps)
    if not spec.guided:
        return steps.steps
    t = torch.tensor(steps.timesteps, dtype=torch.long)
    _, _, _, guides = step_plan(spec, steps, t, steps.index(t))
    return steps.steps + int(guides.sum()) * (spec.calls_per_step() - 1)


class GuidedDenoiser(nn.Module):
    """``models`` maps each model the spec needs (``spec.models()``) to a callable ``model(x, t, y)``; a model called
    with its null label needs ``null_labels[name]`` or a ``null_label`` attribute (DiT's is its class count).
    ``alphas_cumprod`` (alpha_bar for every training timestep t) is needed by APG and CFG-Zero*'s zero-init;
    ``timesteps`` are those the sampler visits (default: all 1000), for ``at.progress`` and the schedules."""

    def __init__(self, spec: MethodSpec, models: Mapping[str, Callable[..., Tensor]], *,
                 null_labels: Optional[Mapping[str, int]] = None,
                 guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS, alphas_cumprod: Optional[Tensor] = None,
                 timesteps: Optional[Sequence[int]] = None):
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
        if spec.needs_noise_schedule() and alphas_cumprod is None:
            raise ValueError(f"{spec.describe()}: APG and CFG-Zero*'s zero-init work on the denoised prediction and "
                             f"need the noise schedule (alphas_cumprod)")
        self.alphas_cumprod = None if alphas_cumprod is None else torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.steps = SamplingSteps(timesteps)
        self.forwards = 0
        self._nonfinite: Optional[Tensor] = None  # t of the first non-finite rule output, or -1

    @property
    def guided(self) -> bool:
        return self.spec.guided

    @property
    def interval(self):
        return self.spec.interval

    def start(self, timesteps: Optional[Sequence[int]] = None) -> None:
        """Begin a batch: the timesteps the sampler will visit (when given), the forward count and checks reset."""
        if timesteps is not None and tuple(sorted(set(timesteps), reverse=True)) != self.steps.timesteps:
            self.steps = SamplingSteps(timesteps)
        self.forwards, self._nonfinite = 0, None

    def finish(self) -> int:
        """End a batch: raise for a rule that returned NaN/inf at some step; return the forwards per image."""
        flagged, self._nonfinite = self._nonfinite, None
        t = -1 if flagged is None else int(flagged)  # the one read-back of the checks, per batch
        if t >= 0:
            raise GuidanceRuleError(f"{self._where(self.steps.step(t))} returned NaN/inf; make the rule return finite "
                                    f"values (guard divisions, e.g. by a norm that can be 0) and rerun")
        return self.forwards

    def predictions(self, x: Tensor, t: Tensor, y: Tensor, y_random: Optional[Tensor] = None,
                    guides: bool = True) -> dict[tuple[str, str], Tensor]:
        """(model, label) -> output, one forward per model (its calls concatenated along the batch); only the
        conditional one when ``guides`` is False."""
        out = {}
        for name, labels in (self.plan if guides else {FINETUNED: ["cond"]}).items():
            model = self.models[name]
            ys = [self._labels(name, label, y, y_random) for label in labels]
            self.forwards += len(ys)
            if len(ys) == 1:
                out[(name, labels[0])] = model(x, t, ys[0])
            else:
                k = len(ys)
                chunks = model(torch.cat([x] * k), torch.cat([t] * k), torch.cat(ys)).chunk(k)
                out.update(zip(((name, label) for label in labels), chunks))
        return out

    def _labels(self, name: str, label: str, y: Tensor, y_random: Optional[Tensor]) -> Tensor:
        if label == "cond":
            return y
        if label == RANDOM:
            if y_random is None:
                raise ValueError(f"{self.spec.describe()} calls the {name} model with a random class per sample; pass "
                                 f"y_random (the sampler draws it from (seed, index): benchmark.sampling.random_classes)")
            return y_random.to(y.device)
        return torch.full_like(y, self.null_labels[name])

    def alpha_bar(self, t: Tensor) -> Tensor:
        return self.alphas_cumprod.to(t.device)[t.long()]

    def forward(self, x: Tensor, t: Tensor, y: Tensor, y_random: Optional[Tensor] = None) -> Tensor:
        if not self.guided:
            self.forwards += 1
            return self.model(x, t, y)
        weight = zeroed = None
        rule_on = guides_on = True
        if self.spec.schedule != CONSTANT or self.spec.zero_steps:  # one host sync per step, only for these
            weight, zeroed, wanted, guides = step_plan(self.spec, self.steps, t, self.steps.index(t))
            rule_on, guides_on = torch.stack([wanted.any(), guides.any()]).tolist()
        if not rule_on:
            self.forwards += 1
            return self.model(x, t, y)
        preds = self.predictions(x, t, y, y_random, guides=guides_on)
        cond = preds[(FINETUNED, "cond")]
        n = x.shape[1] if self.guided_channels is None else min(self.guided_channels, x.shape[1])
        eps = cond[:, :n]
        guided = self.combine(eps, x[:, :n], t, preds, n) if guides_on else eps
        if zeroed is not None:
            start = zero_velocity_eps(x[:, :n], self.alpha_bar(t))
            guided = torch.where(zeroed.view(-1, *([1] * (eps.dim() - 1))), start, guided)
        return torch.cat([blend(eps, guided, weight), cond[:, n:]], dim=1)

    def combine(self, eps: Tensor, x: Tensor, t: Tensor, preds: dict, n: int) -> Tensor:
        """The rule's output on the guided channels: each active guide's update through the combination rules, then
        the method's rule. A guide that is off contributes a zero update, so the rule needs no case for it."""
        spec = self.spec
        active = set(spec.active_guides)
        deltas = {g.name: eps - preds[(g.model, g.label)][:, :n] if g in active else torch.zeros_like(eps)
                  for g in spec.method.guides}
        if spec.combinations:
            ctx = Context(eps, x, self.alpha_bar(t) if spec.needs_noise_schedule() else None)
            for combination in spec.combinations:
                deltas = {g.name: combination.update(deltas[g.name], ctx, spec.params) if g in active
                          else deltas[g.name] for g in spec.method.guides}
        if not spec.method.step_aware:
            return self._checked(eps, deltas, t, None)
        values = t.unique()  # a step-aware rule sees one timestep per call: a sampler's batch has one
        if len(values) == 1:
            return self._checked(eps, deltas, t, self.steps.step(int(values[0])))
        out = torch.empty_like(eps)
        for value in values.tolist():
            rows = (t == value).nonzero().squeeze(1)
            out[rows] = self._checked(eps[rows], {k: d[rows] for k, d in deltas.items()}, t[rows],
                                      self.steps.step(value))
        return out

    def _where(self, at: Step) -> str:
        rule, spec = self.spec.method.rule, self.spec
        name = getattr(rule, "__qualname__", type(rule).__name__)
        module = getattr(rule, "__module__", None) or "unknown"
        source = f" ({spec.source})" if spec.source and spec.source != spec.name else ""
        return (f"guidance method {spec.name}{source}: rule {name} of module {module} at sampling step {at.index + 1} "
                f"of {at.steps} (t={at.t})")

    def _checked(self, eps: Tensor, deltas: dict, t: Tensor, at: Optional[Step]) -> Tensor:
        """The rule's output, after the checks of every call: it ran, it is a tensor shaped like ``eps``; its
        finiteness is flagged on the device for ``finish``."""
        args = (eps, deltas, self.spec.params) if at is None else (eps, deltas, self.spec.params, at)
        try:
            out = self.spec.method.rule(*args)
        except Exception as e:  # noqa: BLE001 - any failure of a rule is reported in one line naming it
            raise GuidanceRuleError(f"{self._where(at or self.steps.step(int(t[0])))} raised {first_line(e)}; fix the "
                                    f"rule: it gets eps_cond and deltas of shape {tuple(eps.shape)} and returns one "
                                    f"of that shape") from None
        if not isinstance(out, Tensor) or out.shape != eps.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
            raise GuidanceRuleError(f"{self._where(at or self.steps.step(int(t[0])))} returned {got}; return a tensor "
                                    f"shaped like eps_cond, {tuple(eps.shape)} (the guided channels only)")
        bad = ~torch.isfinite(out).all()
        if self._nonfinite is None:
            self._nonfinite = torch.full((), -1, dtype=torch.long, device=out.device)
        self._nonfinite = torch.where(bad & (self._nonfinite < 0), t.max().to(self._nonfinite.device), self._nonfinite)
        return out
