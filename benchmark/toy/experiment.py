"""The 2D toy experiment, the benchmark's positive control: pre-train on the many-mode source, fine-tune on the small
shifted target (keeping a mid-fine-tune snapshot), then sample with every built-in guidance method - through the same
registry and denoiser as the image benchmark - over guidance strengths and sampling seeds, and score every sample set
against the exact target density.

The models are trained once, with ``config.seed`` (the target training set, both trainings). Each sampling seed draws
its own labels, starting noise and step noise, shared by every run of that seed, so the methods are compared
sample-for-sample and the spread over seeds is the sampling noise of each number.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.diffusion import create_diffusion
from benchmark.guidance.method import RULE
from benchmark.guidance import FINETUNED, PRETRAINED, GuidedDenoiser, MethodSpec, registered_methods, resolve_method
from benchmark.guidance.builtin import BUILTIN, WEAK
from benchmark.sampling import random_classes, sample_seed
from benchmark.toy.data import GaussianMixture, source_mixture, target_mixture
from benchmark.toy.metrics import toy_metrics
from benchmark.toy.model import ToyDenoiser, ToyLoRA, reheaded_for_target
from benchmark.toy.settings import ToyConfig

FIELD_HALF_WIDTH = 1.0  # half the side of the guidance-field grid, in x_t units
TOY_MODELS = (FINETUNED, PRETRAINED, WEAK)  # what the toy trains: a guide needing another model is not run here


@dataclass(frozen=True)
class ToyRun:
    """One sampled configuration: its label in tables and figures, its method spec, its guidance strength w."""

    label: str
    spec: MethodSpec
    w: float

    @property
    def key(self) -> str:
        return f"{self.label}_w{self.w:g}"


@dataclass
class ToyResult:
    config: ToyConfig
    source: GaussianMixture
    target: GaussianMixture
    target_x: Tensor                       # the fine-tuning set
    target_y: Tensor
    runs: List[ToyRun]
    sample_y: Tensor                       # (seeds, num_samples): the labels every run of a seed was sampled with
    samples: Dict[str, Tensor]             # run key -> (seeds, num_samples, 2)
    rows: List[dict]                       # one metrics row per (run, seed), plus reference rows
    fields: Dict[Tuple[str, int], Tuple[Tensor, Tensor]] = field(default_factory=dict)  # (label, t) -> (x_t grid, push)
    field_alpha_bar: Dict[int, float] = field(default_factory=dict)  # t -> alpha_bar_t of the training diffusion
    models: Dict[str, ToyDenoiser] = field(default_factory=dict)     # finetuned, pretrained, weak
    timings: Dict[str, float] = field(default_factory=dict)


def make_diffusions(config: ToyConfig):
    train = create_diffusion(timestep_respacing=None, learn_sigma=False, diffusion_steps=config.diffusion_steps)
    # DiT's fixed variance when sigma is not learned is beta_t ("large"). Its last steps add noise about as wide as the
    # sharp target modes, so the unguided model leaves some samples off the support, which guidance must pull back.
    # The posterior ("small") variance makes the unguided toy sampler too sharp (fewer off-support samples than exact
    # draws), which leaves the out-of-domain rate nothing to resolve at moderate w.
    sample = create_diffusion(timestep_respacing=str(config.sample_steps), learn_sigma=False,
                              sigma_small=config.sampler_variance == "small", diffusion_steps=config.diffusion_steps)
    return train, sample


def train_denoiser(
    model: ToyDenoiser,
    diffusion,
    draw_batch: Callable[[torch.Generator], Tuple[Tensor, Tensor]],
    steps: int,
    lr: float,
    label_dropout: float,
    generator: torch.Generator,
    desc: str,
    progress: bool = True,
    keep_at: Sequence[int] = (),
) -> Dict[int, ToyDenoiser]:
    """Eps-prediction training (in place) with label dropout to the model's null label; AdamW with a cosine-decayed
    lr, which lands a converged toy without the EMA copy DiT keeps. Returns frozen copies of the weights after each
    step in ``keep_at``."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    kept: Dict[int, ToyDenoiser] = {}
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False, mininterval=0.5)
    for step in bar:
        x0, y = draw_batch(generator)
        dropped = torch.rand(len(y), generator=generator) < label_dropout
        y = torch.where(dropped, torch.full_like(y, model.null_label), y)
        t = torch.randint(0, diffusion.num_timesteps, (len(y),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        loss = diffusion.training_losses(model, x0, t, model_kwargs={"y": y}, noise=noise)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step in keep_at:
            kept[step] = copy.deepcopy(model).eval().requires_grad_(False)
    model.eval()
    return kept


def toy_methods() -> list:
    """The built-in guided methods whose guides the toy has models for, in registry order."""
    builtin = {m.name for m in BUILTIN}
    return [m for name, m in registered_methods().items()
            if name in builtin and m.guides and all(g.model in TOY_MODELS for g in m.guides)]


def toy_runs(config: ToyConfig) -> List[ToyRun]:
    """Fine-tune only, then every toy method at every guided w of the grid, then the APG variants. A method with k
    guidance scales gets 1 + (w - 1) / k on each: the same total extrapolation as one guide at w."""
    runs = [ToyRun("none", resolve_method("none"), 1.0)]
    apg = {"eta": config.apg_eta, "norm_threshold": config.apg_norm_threshold}
    variants = [(m.name, m, {}) for m in toy_methods()]
    variants += [(f"{name}+APG", resolve_method(name).method, apg) for name in config.apg_methods]
    variants += [(f"{name}+{rule}", resolve_method(name).method, {RULE: rule})
                 for rule in config.rules for name in config.rule_methods]
    for w in config.w_grid:
        if w == 1.0:
            continue
        for label, method, extra in variants:
            scales = [p.name for p in method.params if p.unguided is not None]
            params = {name: 1.0 + (w - 1.0) / len(scales) for name in scales}
            runs.append(ToyRun(label, resolve_method(method, {**params, **extra}), w))
    return runs


def toy_denoiser(spec: MethodSpec, models: Dict[str, ToyDenoiser], diffusion) -> GuidedDenoiser:
    """The registry's denoiser over the toy's models; both eps channels are guided (no latent channel to leave out)."""
    timesteps = getattr(diffusion, "timestep_map", range(diffusion.num_timesteps))  # what at.progress counts
    return GuidedDenoiser(spec, models, guided_channels=None, alphas_cumprod=diffusion.original_alphas_cumprod,
                          timesteps=timesteps)


def sampling_inputs(config: ToyConfig, target: GaussianMixture, num_steps: int):
    """Per sampling seed, from its own generator: labels (seeds, N); starting noise and per-step noise, all seeds
    stacked along the batch ((seeds * N, 2), (seeds * N, steps, 2)); N exact target draws (points, labels), the
    reference row of that seed; and each sample's random other class (seeds * N,) (ICG's guide label, from its own
    generators, so the other draws are as they always were)."""
    labels, x_T, step_noise, exact, other = [], [], [], [], []
    for s in range(config.seeds):
        g = torch.Generator().manual_seed(sample_seed(config.seed, s))
        labels.append(target.sample_labels(config.num_samples, g))
        x_T.append(torch.randn(config.num_samples, 2, generator=g))
        step_noise.append(torch.randn(config.num_samples, num_steps, 2, generator=g))
        exact.append(target.sample(config.num_samples, g))
        other.append(random_classes(sample_seed(config.seed, s), range(config.num_samples), labels[-1].tolist(),
                                    target.num_classes))
    return torch.stack(labels), torch.cat(x_T), torch.cat(step_noise), exact, torch.cat(other)


@torch.no_grad()
def sample(denoiser, diffusion, labels: Tensor, x_T: Tensor, step_noise: Tensor, y_random: Tensor) -> Tensor:
    """DDPM ancestral sampling from given starting and step noise (so every run shares them); ``y_random``: each
    sample's random other class, for a method that guides with one. A rule's NaN/inf is one line naming it."""
    kwargs = {"y": labels, "y_random": y_random} if denoiser.spec.needs_random_labels() else {"y": labels}
    denoiser.start()
    x = diffusion.p_sample_loop(denoiser, x_T.shape, noise=x_T, clip_denoised=False, model_kwargs=kwargs,
                                step_noise=lambda i: step_noise[:, i])
    denoiser.finish()
    return x


@torch.no_grad()
def guidance_field(run: ToyRun, models: Dict[str, ToyDenoiser], diffusion, label: int, t: int, center: Tensor,
                   half_width: float, resolution: int = 17) -> Tuple[Tensor, Tensor]:
    """The push a guided run adds, per unit of (w - 1), on a square grid of noisy points x_t:
    -(eps_guided - eps_cond) / (w - 1), i.e. toward the data (for CFG: the direction of score_cond - score_null)."""
    axis = torch.linspace(-half_width, half_width, resolution)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], dim=1) + center.float()
    tt = torch.full((len(points),), t, dtype=torch.long)
    y = torch.full((len(points),), label, dtype=torch.long)
    eps_cond = models[FINETUNED](points, tt, y)
    other = random_classes(0, range(len(points)), y.tolist(), models[FINETUNED].num_classes)
    eps_guided = toy_denoiser(run.spec, models, diffusion)(points, tt, y, other)
    return points, -(eps_guided - eps_cond) / (run.w - 1.0)


def run_toy(config: ToyConfig, progress: bool = True) -> ToyResult:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_toy(config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def metric_row(run: Optional[ToyRun], name: str, w: Optional[float], seed: Optional[int], metrics: dict) -> dict:
    params = run.spec.shown_params() if run is not None else {}
    return {"method": name, "variant": run.label if run is not None else name, "w": w, "seed": seed,
            "params": " ".join(f"{k}={v:g}" for k, v in params.items()), **params, **metrics}


def _run_toy(config: ToyConfig, progress: bool) -> ToyResult:
    timings: Dict[str, float] = {}
    torch.manual_seed(config.seed)  # model initialisation
    gen = torch.Generator().manual_seed(config.seed)
    source = source_mixture()
    target = target_mixture(source)
    if not (0 <= config.field_class < target.num_classes):
        raise ValueError(f"--field-class {config.field_class} must be a target class in [0, {target.num_classes - 1}]")
    target_x, target_y = target.sample(config.target_points, gen)
    train_diffusion, sampler = make_diffusions(config)

    # Pre-training sees fresh source draws every step: the large pre-training set.
    def source_batch(g):
        x, y = source.sample(config.batch_size, g)
        return x.float(), y

    # Fine-tuning resamples the small fixed target set.
    def target_batch(g):
        idx = torch.randint(0, config.target_points, (config.batch_size,), generator=g)
        return target_x[idx].float(), target_y[idx]

    start = time.perf_counter()
    pretrained = ToyDenoiser(source.num_classes, hidden=config.hidden, depth=config.depth)
    train_denoiser(pretrained, train_diffusion, source_batch, config.pretrain_steps, config.pretrain_lr,
                   config.label_dropout, gen, "pre-train (source)", progress)
    pretrained.requires_grad_(False)
    timings["pretrain_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if config.lora_rank is None:
        finetuned = reheaded_for_target(pretrained, target.num_classes, copy_null_row=config.copy_null_row)
        finetuned.requires_grad_(True)
    else:  # LoRA through peft: the pre-trained model itself, wrapped; DoG's guide is it with the adapter off
        finetuned = ToyLoRA(pretrained, target.num_classes, config.lora_rank, copy_null_row=config.copy_null_row)
        pretrained = finetuned.adapter_off()
    weak_step = config.weak_guide_step()
    kept = train_denoiser(finetuned, train_diffusion, target_batch, config.finetune_steps, config.finetune_lr,
                          config.label_dropout, gen, "fine-tune (target)", progress, keep_at=(weak_step,))
    finetuned.requires_grad_(False)
    models = {FINETUNED: finetuned, PRETRAINED: pretrained, WEAK: kept[weak_step]}
    timings["finetune_s"] = time.perf_counter() - start

    start = time.perf_counter()
    runs = toy_runs(config)
    sample_y, x_T, step_noise, exact, other_y = sampling_inputs(config, target, sampler.num_timesteps)
    labels = sample_y.flatten()
    rows: List[dict] = []
    for s, (reference, reference_y) in enumerate(exact):
        rows.append(metric_row(None, "target_exact", None, s, toy_metrics(reference, target, reference_y)))
    rows.append(metric_row(None, "target_train_set", None, None, toy_metrics(target_x, target, target_y)))
    samples: Dict[str, Tensor] = {}
    for run in tqdm(runs, desc="sample + score", disable=not progress, leave=False):
        x = sample(toy_denoiser(run.spec, models, sampler), sampler, labels, x_T, step_noise, other_y)
        samples[run.key] = x.view(config.seeds, config.num_samples, 2)
        for s in range(config.seeds):
            rows.append(metric_row(run, run.spec.name, run.w, s, toy_metrics(samples[run.key][s], target, sample_y[s])))
    timings["sample_s"] = time.perf_counter() - start

    # The fields are drawn where the guidance decides the outcome: around the target and its neighbouring source
    # modes, placed in x_t coordinates (data scaled by sqrt(alpha_bar_t)).
    fields, alpha_bar = {}, {}
    for t in config.field_t:
        alpha_bar[t] = float(train_diffusion.alphas_cumprod[t])
        center = alpha_bar[t] ** 0.5 * target.mean()
        for run in runs:
            if run.w == config.plot_w:
                fields[(run.label, t)] = guidance_field(run, models, train_diffusion, config.field_class, t, center,
                                                        FIELD_HALF_WIDTH)
    return ToyResult(config, source, target, target_x, target_y, runs, sample_y, samples, rows, fields, alpha_bar,
                     models, timings)
