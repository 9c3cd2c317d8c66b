"""``dogbench perf --lora-rank R``: the speed of a LoRA fine-tune's paths, beside the full fine-tune's.

Sampling (the denoising loop at ``report_steps``, without decoding, which is the same for every model) of:

- DoG with a full fine-tune: two models, two forwards (what ``dogbench perf`` times without ``--lora-rank``);
- DoG with a LoRA fine-tune and one copy of the weights, two forwards: the fine-tune, then its ``SourceView`` (the
  adapter switched off) through ``build_sampler`` as runs build it: the path that ships;
- the same as one forward over a mixed batch (``benchmark.sampling.one_copy.MixedBatchDenoiser``: peft's per-row
  ``adapter_names``);
- CFG with either fine-tune (one batch-2B forward);

and fine-tuning steps of the LoRA fine-tune (its row beside the full fine-tune's ``finetune_step``). Rows carry a
``variant``; ratios compare each DoG path with CFG of the same fine-tune. FLOPs are the base model's (the adapter
adds 2 r (d_in + d_out) per token and layer: under 1 % at rank 64).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from benchmark.models import reheaded
from benchmark.models.adapter import AdapterSettings, with_adapter
from benchmark.perf import (GUIDED_W, PATHS, PerfSettings, _rate_row, _with_flops, loop_extrapolation,
                            random_autoencoder, random_dit, synchronize, training_rows)
from benchmark.sampling import SamplingSettings, build_sampler, method_spec
from benchmark.sampling.one_copy import mixed_batch


def random_lora(cfg: PerfSettings, latent: int):
    """A LoRA fine-tune of a random source with non-zero adapter weights (a fresh adapter's B is 0)."""
    model = with_adapter(random_dit(cfg, latent, 1000), cfg.num_classes, AdapterSettings(rank=cfg.lora_rank), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.normal_(0, 0.02)
    return model


def round_robin_seconds(cfg: PerfSettings, device: torch.device, batch: list, variants: dict, settings,
                        autoencoder) -> dict[str, list[float]]:
    """variant -> [median seconds at each of ``timed_steps``]: every variant's sampler timed once per round, ``repeat``
    rounds, so that a machine whose load drifts (a shared CPU) slows every variant alike."""
    samplers = {}
    for variant, (method, finetuned, pretrained, mixed) in variants.items():
        for steps in cfg.timed_steps:
            timed = settings.replaced(steps=steps)
            spec = method_spec(method, values={"w": GUIDED_W}, interval=timed.guidance_interval)
            sampler = build_sampler(timed, spec, 0, finetuned, pretrained, autoencoder, device)
            samplers[(variant, steps)] = mixed_batch(sampler) if mixed else sampler
    print(f"timing {len(variants)} sampling variants, {cfg.repeat} rounds ...", flush=True)
    times: dict = {key: [] for key in samplers}
    for round_ in range(cfg.repeat + 1):  # round 0 warms up (torch.compile compiles there)
        for key, sampler in samplers.items():
            start = time.perf_counter()
            sampler.sample_latents(batch)
            synchronize(device)
            if round_:
                times[key].append(time.perf_counter() - start)
    return {variant: [float(np.median(times[(variant, steps)])) for steps in cfg.timed_steps] for variant in variants}


def lora_rows(cfg: PerfSettings, device: torch.device, fwd_flops: float, peak: Optional[float]) -> list[dict]:
    latent = cfg.image_size // (8 if cfg.in_channels == 4 else 1)
    source = random_dit(cfg, latent, 1000)
    full = reheaded(source, cfg.num_classes, seed=0)
    lora = random_lora(cfg, latent)
    autoencoder = random_autoencoder(cfg)
    batch = list(range(cfg.batch_size))
    variants = {  # name -> (method, fine-tuned, pre-trained, mixed batch)
        "full: two models": ("dog", full, source, False),
        f"lora-r{cfg.lora_rank}: one copy, two forwards (ships)": ("dog", lora, lora.source_view(), False),
        f"lora-r{cfg.lora_rank}: one copy, mixed batch": ("dog", lora, lora.source_view(), True),
        "full": ("cfg", full, None, False),
        f"lora-r{cfg.lora_rank}": ("cfg", lora, None, False),
    }
    rows = []
    for path in cfg.paths:
        precision, compile_on_cuda = PATHS[path]
        settings = SamplingSettings(precision=precision, decode_precision=precision, batch_size=cfg.batch_size,
                                    compile=compile_on_cuda and device.type == "cuda", guided_channels=3)
        seconds = round_robin_seconds(cfg, device, batch, variants, settings, autoencoder)
        by_kind = {}
        for variant, (method, *_) in variants.items():
            loop_s, fit = loop_extrapolation(cfg, seconds[variant])
            row = _rate_row("sampling", len(batch), loop_s, method=method, variant=variant, path=path,
                            precision=precision, compile=settings.compiled_on(device.type), steps=cfg.report_steps,
                            timed_steps=list(cfg.timed_steps), timed_seconds=seconds[variant], extrapolation=fit,
                            decode_included=False, timing="round-robin over the variants, median of repeat")
            rows.append(_with_flops(row, 2 * cfg.report_steps * fwd_flops, peak))
            by_kind.setdefault((method, variant.split(":")[0]), []).append(rows[-1])
        for (method, kind), found in by_kind.items():
            if method == "dog":
                cfg_rate = by_kind[("cfg", kind)][0]["img_per_s"]
                rows += [{"work": "ratio", "what": f"dog/cfg, {row['variant']}", "path": path,
                          "value": row["img_per_s"] / cfg_rate} for row in found]
    if "training" not in cfg.skip:
        rows += training_rows(cfg, device, fwd_flops, peak, make_model=lambda: random_lora(cfg, latent),
                              variant=f"lora-r{cfg.lora_rank}")
    return rows
