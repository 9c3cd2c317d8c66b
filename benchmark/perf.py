"""``dogbench perf``: throughput of the code that ships, on this machine.

Random weights of the real architectures (speed does not depend on the weights), run through the same functions
``dogbench run`` calls:

- sampling: the ``Sampler`` from ``build_sampler`` (per-sample noise from (seed, i), the guided denoiser, the
  respaced diffusion, the autoencoder's decoder), for none / CFG / DoG. The denoising loop is timed at two step
  counts and the rate at ``report_steps`` (50) comes from the straight line through them, so a GPU check does not
  spend minutes per point; decoding is timed once per batch and added;
- writing: ``SampleFolder.write`` of a batch of PNGs (what the writer thread overlaps with sampling);
- fine-tuning: optimizer steps of the real Lightning training step (``DiffusionTrainer``: label dropout, the loss,
  AdamW, the EMA update) through ``lightning_trainer``, on in-memory pre-encoded latents;
- features: ``feature_statistics`` (PIL decode, clean resize, the network, the streaming statistics).

Each measured configuration is one row of the JSON record (``results/perf/perf-<device>-<time>.json``): the work,
method, path (``reference`` = the DiT reference code's numerics: fp32 weights, TF32, eager; ``fast`` = bf16
autocast and, on CUDA, torch.compile), batch, img/s and, where the FLOPs are known, TFLOP/s and MFU against the
device's dense bf16 peak. A measurement, not a test: run it on the machine you care about.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Literal, Optional

import lightning as L
import numpy as np
import torch
from diffusers import AutoencoderKL
from pydantic import Field, field_validator

from benchmark.devices import device_name
from benchmark.io import atomic_write_json, results_root
from benchmark.metrics.effnet import EfficientNetLite0
from benchmark.metrics.features import FeatureNetwork, ResizePreprocess, feature_statistics, state_dict_sha256
from benchmark.metrics.inception import FIDInceptionV3
from benchmark.models import DEFAULT_VAE, KLAutoencoder, IdentityAutoencoder, build_dit, dit_flops_per_forward, reheaded
from benchmark.sampling import SampleFolder, SamplingSettings, build_sampler, generate_samples, method_spec
from benchmark.settings import Count, Settings
from benchmark.training.module import DiffusionTrainer
from benchmark.training.run import lightning_trainer
from benchmark.training.settings import LaunchSettings

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for MFU. NOTES.md measured ~790 on an H200.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "RTX 4090": 165.0}
PAPER = dict(datasets=7, finetune_steps=24_000, finetune_batch=32, guided_sets=2 * 15, unguided_sets=1, samples=10_000)
PATHS = {"reference": ("tf32", False), "fast": ("bf16", True)}  # path -> (precision, torch.compile on CUDA)
FORWARDS_PER_STEP = {"none": 1, "cfg": 2, "dog": 2}
GUIDED_W = 1.5


class PerfSettings(Settings):
    """What ``dogbench perf`` measures; ``none`` = chosen for the device (the paper's sizes on CUDA, small on CPU)."""

    model: Optional[str] = Field(None, json_schema_extra={"null_word": "auto"})
    """DiT config with random weights (auto: DiT-XL/2 on CUDA, DiT-S/4 on CPU)"""
    image_size: Optional[Count] = Field(None, json_schema_extra={"null_word": "auto"})
    """image side in pixels (auto: 256 on CUDA, 64 on CPU)"""
    in_channels: Literal[3, 4] = 4
    """4 = SD-VAE latents, 3 = pixel space"""
    num_classes: Count = 101
    """classes of the fine-tuned model"""
    batch_size: Optional[Count] = Field(None, json_schema_extra={"null_word": "auto"})
    """sampling batch in images (auto: 256 on CUDA, 4 on CPU)"""
    train_batch_size: Optional[Count] = Field(None, json_schema_extra={"null_word": "auto"})
    """fine-tuning batch in images (auto: 32 on CUDA, 4 on CPU)"""
    feature_images: Optional[Count] = Field(None, json_schema_extra={"null_word": "auto"})
    """images per feature-network measurement (auto: 2048 on CUDA, 8 on CPU)"""
    timed_steps: list[Count] = [2, 6]
    """two sampler step counts timed; the rate at report_steps comes from the line through them"""
    report_steps: Count = 50
    """sampling steps the sampling rates are reported at (the protocol's 50)"""
    train_steps: Optional[Count] = Field(None, json_schema_extra={"null_word": "auto"})
    """optimizer steps timed after warm-up (auto: 20 on CUDA, 3 on CPU)"""
    repeat: Optional[Count] = Field(None, json_schema_extra={"null_word": "auto"})
    """timed repetitions, median (auto: 3 on CUDA, 1 on CPU)"""
    paths: list[Literal["reference", "fast"]] = ["reference", "fast"]
    """reference = fp32 weights with TF32, eager; fast = bf16 autocast, torch.compile on CUDA"""
    skip: list[Literal["sampling", "decode", "png", "training", "features"]] = []
    """work not to measure"""
    lora_rank: Optional[Count] = Field(None, json_schema_extra={"null_word": "none"})
    """also time a LoRA fine-tune of this rank (attention and MLP projections): DoG with one copy of the weights (two
    forwards, as shipped, and one mixed-batch forward), CFG and fine-tuning steps (none: not measured)"""

    @field_validator("timed_steps")
    @classmethod
    def _two_counts(cls, value: list) -> list:
        if len(value) != 2 or not 2 <= value[0] < value[1]:
            raise ValueError(f"must be two increasing step counts >= 2, e.g. 2,6; got {value}")
        return value

    def resolved(self, device: torch.device) -> "PerfSettings":
        cuda = device.type == "cuda"
        auto = dict(model="DiT-XL/2" if cuda else "DiT-S/4", image_size=256 if cuda else 64,
                    batch_size=256 if cuda else 4, train_batch_size=32 if cuda else 4,
                    feature_images=2048 if cuda else 8, train_steps=20 if cuda else 3, repeat=3 if cuda else 1)
        return self.replaced(**{k: v for k, v in auto.items() if getattr(self, k) is None})


def peak_tflops(name: str) -> Optional[float]:
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeat: int = 3) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls (compilation happens there)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def random_dit(cfg: PerfSettings, latent: int, num_classes: int):
    torch.manual_seed(0)
    model = build_dit(cfg.model, input_size=latent, in_channels=cfg.in_channels, num_classes=num_classes)
    with torch.no_grad():  # adaLN-Zero starts as the identity: give every layer real work
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


def random_autoencoder(cfg: PerfSettings):
    if cfg.in_channels != 4:
        return IdentityAutoencoder()
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=cfg.image_size)  # the sd-vae-ft-ema architecture
    return KLAutoencoder(vae, name=f"{DEFAULT_VAE} (random weights)")


def _rate_row(work: str, images: int, seconds: float, **fields) -> dict:
    return {"work": work, **fields, "images": images, "seconds": round(seconds, 6), "img_per_s": images / seconds}


def _with_flops(row: dict, flops_per_image: float, peak: Optional[float]) -> dict:
    tflops = row["img_per_s"] * flops_per_image / 1e12
    return {**row, "tflops": tflops, "mfu": tflops / peak if peak else None}


def sampling_rows(cfg: PerfSettings, device: torch.device, fwd_flops: float, peak: Optional[float]) -> list[dict]:
    latent = cfg.image_size // (8 if cfg.in_channels == 4 else 1)
    finetuned, pretrained = random_dit(cfg, latent, cfg.num_classes), random_dit(cfg, latent, 1000)
    autoencoder = random_autoencoder(cfg)
    batch = list(range(cfg.batch_size))
    rows = []
    for path in cfg.paths:
        precision, compile_on_cuda = PATHS[path]
        settings = SamplingSettings(precision=precision, decode_precision=precision, batch_size=cfg.batch_size,
                                    compile=compile_on_cuda and device.type == "cuda", guided_channels=3)
        decode_s = None
        for method in ("dog", "cfg", "none"):
            print(f"timing {method} sampling ({path}) ...", flush=True)
            sampler, loop_s, seconds, fit = sampling_loop_seconds(
                cfg, device, batch, lambda timed: build_sampler(
                    timed, method_spec(method, values={"w": GUIDED_W if method != "none" else 1.0},
                                interval=timed.guidance_interval), 0, finetuned,
                    pretrained, autoencoder, device), settings)
            if decode_s is None and "decode" not in cfg.skip:
                z, _ = sampler.sample_latents(batch)
                decode_s = time_it(lambda: sampler.decode(z), device, warmup=1, repeat=cfg.repeat)
                rows.append(_rate_row("decode", len(batch), decode_s, path=path, precision=precision))
            row = _rate_row("sampling", len(batch), loop_s + (decode_s or 0.0), method=method, path=path,
                            precision=precision, compile=settings.compiled_on(device.type), steps=cfg.report_steps,
                            timed_steps=list(cfg.timed_steps), timed_seconds=seconds, extrapolation=fit,
                            decode_included=decode_s is not None)
            rows.append(_with_flops(row, FORWARDS_PER_STEP[method] * cfg.report_steps * fwd_flops, peak))
        by = {r["method"]: r["img_per_s"] for r in rows if r["work"] == "sampling" and r["path"] == path}
        rows.append({"work": "ratio", "what": "dog/cfg sampling rate", "path": path, "value": by["dog"] / by["cfg"]})
    if "png" not in cfg.skip:
        images = np.random.default_rng(0).integers(0, 256, (len(batch), cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            folder = SampleFolder(tmp, len(batch), {}).open()
            png_s = time_it(lambda: folder.write(batch, images), torch.device("cpu"), warmup=1, repeat=cfg.repeat)
        rows.append(_rate_row("png", len(batch), png_s))
        rows.append(generate_row(cfg, sampler, device, png_s))
    return rows


def sampling_loop_seconds(cfg: PerfSettings, device: torch.device, batch: list, make_sampler, settings):
    """(the last sampler, seconds of the denoising loop at ``report_steps``, the timings, how they were fitted):
    ``make_sampler(settings)`` timed at both ``timed_steps`` and extrapolated along the line through them."""
    seconds = []
    for steps in cfg.timed_steps:
        sampler = make_sampler(settings.replaced(steps=steps))
        seconds.append(time_it(lambda: sampler.sample_latents(batch), device, warmup=1, repeat=cfg.repeat))
    loop_s, fit = loop_extrapolation(cfg, seconds)
    return sampler, loop_s, seconds, fit


def loop_extrapolation(cfg: PerfSettings, seconds: list) -> tuple[float, str]:
    """(seconds of the loop at ``report_steps``, how): the line through the timings at the two ``timed_steps``."""
    (s1, s2), (t1, t2) = cfg.timed_steps, seconds
    per_step = (t2 - t1) / (s2 - s1)
    fit = "line through both step counts"
    if per_step <= 0:  # timing noise larger than the step's cost (a busy machine): scale the longer time
        per_step, fit = t2 / s2, "proportional to the longer timing (the two timings were within noise)"
    return t1 + per_step * (cfg.report_steps - s1), fit


def generate_row(cfg: PerfSettings, sampler, device: torch.device, png_s: float) -> dict:
    """``generate_samples`` as runs call it (three batches, PNGs written by the background writer) against the
    same work done one after the other: what the overlap of writing with sampling saves."""
    n = 3 * cfg.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = SampleFolder(tmp, n, {}).open()
        start = time.perf_counter()
        generate_samples(sampler, folder, cfg.batch_size, progress=False)
        synchronize(device)
        overlapped = time.perf_counter() - start
    sample_s = time_it(lambda: sampler.sample(list(range(cfg.batch_size))), device, warmup=0, repeat=1)
    sequential = 3 * (sample_s + png_s)
    return _rate_row("generate", n, overlapped, method=sampler.denoiser.guided and "guided" or "none",
                     steps=sampler.diffusion.num_timesteps, sequential_s=round(sequential, 6),
                     overlap_saved_s=round(sequential - overlapped, 6),
                     includes="sample + decode + PNG write, writer thread overlapping the next batch")


class StepTimer(L.Callback):
    """Wall time of every optimizer step (synchronised with the device)."""

    def __init__(self, device: torch.device):
        self.device, self.times, self._start = device, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        synchronize(self.device)
        self.times.append(time.perf_counter() - self._start)


def training_rows(cfg: PerfSettings, device: torch.device, fwd_flops: float, peak: Optional[float],
                  make_model: Optional[Callable] = None, variant: Optional[str] = None) -> list[dict]:
    """Fine-tuning steps of ``make_model()`` (default: the re-headed full fine-tune) on each path."""
    latent = cfg.image_size // (8 if cfg.in_channels == 4 else 1)
    make_model = make_model or (lambda: reheaded(random_dit(cfg, latent, 1000), cfg.num_classes, seed=0))
    B, n = cfg.train_batch_size, cfg.train_batch_size * 4
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(n, cfg.in_channels, latent, latent, generator=g), torch.rand(n, cfg.in_channels, latent, latent, generator=g)
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(mean, std, labels), batch_size=B, shuffle=True,
                                         drop_last=True)
    rows = []
    warmup = 2
    for path in cfg.paths:
        precision = PATHS[path][0]
        print(f"timing fine-tuning steps ({path}) ...", flush=True)
        module = DiffusionTrainer(make_model(), global_batch_size=B)
        timer = StepTimer(device)
        launch = LaunchSettings(devices=1, accelerator="gpu" if device.type == "cuda" else "cpu")
        with tempfile.TemporaryDirectory() as tmp:
            trainer = lightning_trainer(launch, precision if device.type == "cuda" else "fp32",
                                        max_steps=warmup + cfg.train_steps, progress=False, out_dir=Path(tmp),
                                        callbacks=[timer])
            trainer.fit(module, train_dataloaders=loader)
        seconds = float(np.median(timer.times[warmup:]))
        row = _rate_row("finetune_step", B, seconds, path=path, precision=precision,
                        includes="label dropout, DiT loss (MSE + VB), AdamW, EMA update; pre-encoded latents",
                        **({"variant": variant} if variant else {}))
        rows.append(_with_flops(row, 3 * fwd_flops, peak))
    return rows


def feature_rows(cfg: PerfSettings, device: torch.device) -> list[dict]:
    images = np.random.default_rng(0).integers(0, 256, (cfg.feature_images, cfg.image_size, cfg.image_size, 3),
                                               dtype=np.uint8)
    rows = []
    for name, module, size, dim in (("inception_v3_fid", FIDInceptionV3(), 299, 2048),
                                    ("efficientnet_lite0", EfficientNetLite0(), 224, 1280)):
        print(f"timing {name} features ...", flush=True)
        net = FeatureNetwork(name=name, dim=dim, module=module.eval(), preprocess=ResizePreprocess(size),
                             weights_sha256=state_dict_sha256(module))
        batch = min(256, cfg.feature_images)
        seconds = time_it(lambda: feature_statistics(net, images, batch_size=batch, device=device, progress=False),
                          device, warmup=1, repeat=cfg.repeat)
        rows.append(_rate_row("features", len(images), seconds, network=name, precision="fp32 (TF32 off)",
                              includes="PIL decode, clean resize, network, statistics"))
    return rows


def paper_protocol_hours(rows: list[dict]) -> Optional[float]:
    """Device-hours of the paper protocol (7 datasets: fine-tune, 15 w x 2 methods + fine-tune only, 10k samples
    each, decoded, both feature networks) from the measured fast-path rates."""
    rate = {(r["work"], r.get("method") or r.get("network")): r["img_per_s"] for r in rows
            if r.get("path", "fast") == "fast" and "img_per_s" in r}
    need = [("finetune_step", None), ("sampling", "dog"), ("sampling", "cfg"), ("sampling", "none")]
    if any(k not in rate for k in need):
        return None
    p = PAPER
    seconds = p["datasets"] * p["finetune_steps"] * p["finetune_batch"] / rate[("finetune_step", None)]
    per_guided_set = p["samples"] / (0.5 * (rate[("sampling", "dog")] + rate[("sampling", "cfg")]))
    seconds += p["datasets"] * (p["guided_sets"] * per_guided_set + p["samples"] / rate[("sampling", "none")])
    n_images = p["datasets"] * (p["guided_sets"] + 1) * p["samples"]
    for network in ("inception_v3_fid",):
        if ("features", network) in rate:
            seconds += n_images / rate[("features", network)]
    return seconds / 3600


def run_perf(settings: PerfSettings, device: torch.device) -> dict:
    cfg = settings.resolved(device)
    name = device_name(device)
    latent = cfg.image_size // (8 if cfg.in_channels == 4 else 1)
    fwd_flops = dit_flops_per_forward({**build_dit(cfg.model, input_size=latent, in_channels=cfg.in_channels,
                                                   num_classes=cfg.num_classes).config})
    peak = peak_tflops(name)
    rows: list[dict] = []
    if "sampling" not in cfg.skip:
        rows += sampling_rows(cfg, device, fwd_flops, peak)
    if "training" not in cfg.skip:
        rows += training_rows(cfg, device, fwd_flops, peak)
    if "features" not in cfg.skip:
        rows += feature_rows(cfg, device)
    if cfg.lora_rank is not None:
        from benchmark.perf_lora import lora_rows
        rows += lora_rows(cfg, device, fwd_flops, peak)
    return {"device": name, "torch": torch.__version__, "settings": cfg.to_dict(), "gflops_per_forward": fwd_flops / 1e9,
            "bf16_peak_tflops": peak, "rows": rows, "paper_protocol_device_hours": paper_protocol_hours(rows),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def format_table(record: dict) -> str:
    s = record["settings"]
    lines = [f"{record['device']}  {s['model']} @ {s['image_size']}px  ({record['gflops_per_forward']:.1f} GFLOP "
             f"per forward)", f"{'work':<34}{'path':>10}{'img/s':>12}{'TFLOP/s':>10}{'MFU':>8}"]
    for r in record["rows"]:
        if r["work"] == "ratio":
            lines.append(f"{r['what']:<34}{r['path']:>10}{r['value']:>12.3f}")
            continue
        what = r["work"] + "".join(f" {r[k]}" for k in ("method", "network", "variant") if r.get(k))
        tflops = f"{r['tflops']:.1f}" if r.get("tflops") is not None else ""
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else ""
        lines.append(f"{what:<34}{r.get('path', ''):>10}{r['img_per_s']:>12.2f}{tflops:>10}{mfu:>8}")
    if record.get("paper_protocol_device_hours"):
        lines.append(f"paper protocol estimate at the fast-path rates: {record['paper_protocol_device_hours']:.1f} "
                     f"device-hours on this device (with {s['model']})")
    return "\n".join(lines)


def write_record(record: dict, out: Optional[str | Path] = None) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in record["device"]).strip("-").lower()[:40]
    path = Path(out) if out else results_root() / "perf" / f"perf-{slug}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_json(path, record)
    return path
