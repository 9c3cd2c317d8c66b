"""The 2D toy experiment: pre-train on the many-mode source, fine-tune on the small shifted target, then sample with
fine-tune only, CFG and DoG over a grid of guidance scales and score every sample set against the exact target density.

Everything shares one seed: the target training set, both trainings, and the sampler noise. Every (method, w) run
starts from the same initial noise and draws the same per-step noise, so the methods are compared sample-for-sample.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.diffusion import create_diffusion
from benchmark.guidance import GuidedDenoiser, resolve_method
from benchmark.toy.data import GaussianMixture, source_mixture, target_mixture
from benchmark.toy.metrics import toy_metrics
from benchmark.toy.model import ToyDenoiser, reheaded_for_target
from benchmark.toy.settings import ToyConfig

FIELD_HALF_WIDTH = 1.0  # half the side of the guidance-field grid, in x_t units


@dataclass
class ToyResult:
    config: ToyConfig
    source: GaussianMixture
    target: GaussianMixture
    target_x: Tensor                       # the fine-tuning set
    target_y: Tensor
    sample_y: Tensor                       # the labels every method was sampled with
    samples: Dict[Tuple[str, float], Tensor]  # (method, w) -> (num_samples, 2)
    rows: List[dict]                       # one metrics row per (method, w) plus reference rows
    fields: Dict[Tuple[str, int], Tuple[Tensor, Tensor]] = field(default_factory=dict)  # (method, t) -> (x_t grid, push)
    field_alpha_bar: Dict[int, float] = field(default_factory=dict)  # t -> alpha_bar_t of the training diffusion
    pretrained: Optional[ToyDenoiser] = None
    finetuned: Optional[ToyDenoiser] = None
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
) -> ToyDenoiser:
    """Eps-prediction training with label dropout to the model's null label; AdamW with a cosine-decayed lr, which
    lands a converged toy without the EMA copy DiT keeps."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=0.5)
    for _ in bar:
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
    model.eval()
    return model


def build_denoiser(method: str, w: float, finetuned: ToyDenoiser, pretrained: ToyDenoiser) -> GuidedDenoiser:
    """Fine-tune only (w=1), CFG (guide: the fine-tuned model's null label K) or DoG (guide: the frozen pre-trained
    model's own null label). Both eps channels are guided: the toy has no latent channel to leave out."""
    spec = resolve_method("none") if method == "finetune" or w == 1.0 else resolve_method(method, w=w)
    return GuidedDenoiser(spec, {"finetuned": finetuned, "pretrained": pretrained}, guided_channels=None)


@torch.no_grad()
def sample(denoiser, sampler, labels: Tensor, seed: int) -> Tensor:
    """DDPM ancestral sampling; the global RNG is reseeded so every call draws identical noise."""
    torch.manual_seed(seed)
    noise = torch.randn(len(labels), 2)
    return sampler.p_sample_loop(denoiser, (len(labels), 2), noise=noise, clip_denoised=False,
                                 model_kwargs={"y": labels}, progress=False)


@torch.no_grad()
def guidance_field(
    method: str, finetuned: ToyDenoiser, pretrained: ToyDenoiser, label: int, t: int, center: Tensor, half_width: float,
    resolution: int = 17,
) -> Tuple[Tensor, Tensor]:
    """The push the guidance adds on a square grid of noisy points x_t: -(eps_cond - eps_guide), i.e. the direction of
    score_cond - score_guide (eps points toward the noise, so its negation points toward the data)."""
    axis = torch.linspace(-half_width, half_width, resolution)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], dim=1) + center.float()
    tt = torch.full((len(points),), t, dtype=torch.long)
    eps_cond = finetuned(points, tt, torch.full((len(points),), label, dtype=torch.long))
    if method == "cfg":
        eps_guide = finetuned(points, tt, torch.full((len(points),), finetuned.null_label, dtype=torch.long))
    elif method == "dog":
        eps_guide = pretrained(points, tt, torch.full((len(points),), pretrained.null_label, dtype=torch.long))
    else:
        raise ValueError(f"no guidance field for method {method!r}; use cfg or dog")
    return points, -(eps_cond - eps_guide)


def run_toy(config: ToyConfig, progress: bool = True) -> ToyResult:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_toy(config, progress)
    finally:
        torch.set_num_threads(previous_threads)


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
    finetuned = reheaded_for_target(pretrained, target.num_classes, copy_null_row=config.copy_null_row).requires_grad_(True)
    train_denoiser(finetuned, train_diffusion, target_batch, config.finetune_steps, config.finetune_lr,
                   config.label_dropout, gen, "fine-tune (target)", progress)
    finetuned.requires_grad_(False)
    timings["finetune_s"] = time.perf_counter() - start

    start = time.perf_counter()
    sample_y = target.sample_labels(config.num_samples, gen)
    runs = [("finetune", 1.0)] + [(m, w) for m in ("cfg", "dog") for w in config.w_grid]
    samples: Dict[Tuple[str, float], Tensor] = {}
    rows: List[dict] = []
    reference, reference_y = target.sample(config.num_samples, gen)
    rows.append({"method": "target_exact", "w": None, **toy_metrics(reference, target, reference_y)})
    rows.append({"method": "target_train_set", "w": None, **toy_metrics(target_x, target, target_y)})
    sample_seed = config.seed + 1  # any fixed value: what matters is that every run shares it
    for method, w in tqdm(runs, desc="sample + score", disable=not progress, leave=False):
        if w == 1.0 and method != "finetune":  # w=1 is the unguided conditional for both rules: same samples
            x = samples[("finetune", 1.0)]
        else:
            x = sample(build_denoiser(method, w, finetuned, pretrained), sampler, sample_y, sample_seed)
        samples[(method, w)] = x
        rows.append({"method": method, "w": w, **toy_metrics(x, target, sample_y)})
    timings["sample_s"] = time.perf_counter() - start

    # The fields are drawn where the guidance decides the outcome: around the target and its neighbouring source
    # modes, placed in x_t coordinates (data scaled by sqrt(alpha_bar_t)).
    fields, alpha_bar = {}, {}
    for t in config.field_t:
        alpha_bar[t] = float(train_diffusion.alphas_cumprod[t])
        center = alpha_bar[t] ** 0.5 * target.mean()
        for m in ("cfg", "dog"):
            fields[(m, t)] = guidance_field(m, finetuned, pretrained, config.field_class, t, center, FIELD_HALF_WIDTH)
    return ToyResult(config, source, target, target_x, target_y, sample_y, samples, rows, fields, alpha_bar,
                     pretrained, finetuned, timings)
