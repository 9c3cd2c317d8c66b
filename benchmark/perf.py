"""``dogbench perf``: throughput of the benchmark's GPU work on this machine, reference path against fast path.

Random weights of the real architectures (speed does not depend on the weights). For each piece of work it times
the reference-equivalent path (fp32/TF32, eager, DoG's two models called one after the other) and the fast path
(bf16 autocast, torch.compile, fused AdamW), and reports img/s, achieved TFLOP/s, MFU against the device's bf16
peak, and DoG/CFG. Sampling is timed over a few denoising steps after warm-up and reported at 50 steps.
Writes ``results/perf/perf-<device>-<time>.json``. A measurement, not a test: run it on the machine you care about.
"""
from __future__ import annotations

import argparse
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmark.io import atomic_write_json, results_root

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for MFU. NOTES.md measured ~790 on an H200.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "RTX 4090": 165.0}
PAPER = dict(datasets=7, finetune_steps=24_000, finetune_batch=32, guided_sets=2 * 15, unguided_sets=1, samples=10_000)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


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


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on GPUs only: CPUs without bf16 matrix units run it slower than fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda" else nullcontext()


def build_models(args, device):
    from benchmark.models import build_dit

    torch.manual_seed(0)
    latent = args.image_size // (8 if args.in_channels == 4 else 1)
    make = lambda k: build_dit(args.model, input_size=latent, in_channels=args.in_channels, num_classes=k).to(device)  # noqa: E731
    finetuned, pretrained = make(args.num_classes), make(1000)
    for m in (finetuned, pretrained):  # adaLN-Zero starts as the identity: give every layer real work
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.02)
    return finetuned.eval().requires_grad_(False), pretrained.eval().requires_grad_(False), latent


def sampling_rate(args, device, method: str, fast: bool, finetuned, pretrained, latent) -> float:
    """Images per second of 50-step guided sampling (no decode), from the time of a few steps."""
    from benchmark.diffusion import create_diffusion
    from benchmark.sampling.generate import make_denoiser

    ft, pre = finetuned, pretrained
    if fast and args.compile:
        ft, pre = torch.compile(finetuned), torch.compile(pretrained)
    denoiser = make_denoiser(method, ft, pre, 1.5)
    diffusion = create_diffusion("50")
    B = args.batch_size
    x = torch.randn(B, args.in_channels, latent, latent, device=device)
    y = torch.randint(0, args.num_classes, (B,), device=device)
    noise = torch.randn_like(x)

    def steps():
        z = x
        for i in range(args.measure_steps):
            t = torch.full((B,), 49 - i, device=device, dtype=torch.long)
            with torch.no_grad(), autocast(device, fast):
                out = diffusion.p_sample(lambda a, b, **kw: denoiser(a, b, **kw).float(), z, t, clip_denoised=False,
                                         model_kwargs={"y": y}, noise=noise)
            z = out["sample"]
        return z

    seconds = time_it(steps, device, warmup=2 if fast and args.compile else 1, repeat=args.repeat)
    return B / (seconds / args.measure_steps * 50)


def finetune_rate(args, device, fast: bool, finetuned, latent) -> float:
    from benchmark.diffusion import create_diffusion
    from benchmark.models import reheaded

    model = reheaded(finetuned, args.num_classes).to(device).train()
    step_model = torch.compile(model) if fast and args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, fused=fast and device.type == "cuda")
    diffusion = create_diffusion()
    B = args.train_batch_size
    x = torch.randn(B, args.in_channels, latent, latent, device=device)
    y = torch.randint(0, args.num_classes, (B,), device=device)

    def step():
        t = torch.randint(0, 1000, (B,), device=device)
        with autocast(device, fast):
            loss = diffusion.training_losses(step_model, x, t, {"y": y})["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return B / time_it(step, device, warmup=3 if fast and args.compile else 1, repeat=args.repeat)


def decode_rate(args, device, fast: bool) -> Optional[float]:
    if args.in_channels != 4:
        return None
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=args.image_size).to(device).eval()
    z = torch.randn(args.decode_batch_size, 4, args.image_size // 8, args.image_size // 8, device=device)

    def decode():
        with torch.no_grad(), autocast(device, fast):
            vae.decode(z / 0.18215)

    return args.decode_batch_size / time_it(decode, device, repeat=args.repeat)


def feature_rate(args, device, which: str, fast: bool) -> Optional[float]:
    if which == "inception":
        from benchmark.metrics.inception import FIDInceptionV3

        net, size = FIDInceptionV3(), 299
    elif which == "effnet":
        from benchmark.metrics.effnet import EfficientNetLite0

        net, size = EfficientNetLite0(), 224
    else:
        return None
    net = net.to(device).eval()
    x = torch.rand(args.feature_batch_size, 3, size, size, device=device)

    def run():
        with torch.no_grad(), autocast(device, fast):
            net(x)

    return args.feature_batch_size / time_it(run, device, repeat=args.repeat)


def paper_protocol_hours(r: dict) -> Optional[float]:
    """GPU-hours of the paper protocol (7 datasets: fine-tune, 15 w x 2 methods + fine-tune only, 10k samples,
    decode, both feature networks) from the measured fast-path rates."""
    need = ("finetune_fast", "dog_fast", "cfg_fast", "none_fast")
    if any(r.get(k) is None for k in need):
        return None
    p = PAPER
    seconds = p["datasets"] * p["finetune_steps"] * p["finetune_batch"] / r["finetune_fast"]
    per_set = p["samples"] * (1 / (0.5 * (r["dog_fast"] + r["cfg_fast"])))
    sets = p["guided_sets"]
    seconds += p["datasets"] * (sets * per_set + p["samples"] / r["none_fast"])
    n_images = p["datasets"] * (sets + 1) * p["samples"]
    for key in ("decode_fast", "inception_fast", "dinov2_fast"):
        if r.get(key):
            seconds += n_images / r[key]
    return seconds / 3600


def run_perf(args) -> dict:
    from benchmark.models import dit_config, dit_flops_per_forward

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the reference numbers are TF32
        torch.backends.cudnn.allow_tf32 = True
    name = device_name(device)
    finetuned, pretrained, latent = build_models(args, device)
    config = dit_config(args.model, input_size=latent, in_channels=args.in_channels)
    fwd_flops = dit_flops_per_forward({**config, "learn_sigma": True})
    results: dict = {"device": name, "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
                     "torch": torch.__version__, "compile": args.compile, "gflops_per_forward": fwd_flops / 1e9}
    paths = {"reference": False, "fast": True}
    for method in ("dog", "cfg", "none"):
        for path, fast in paths.items():
            key = f"{method}_{path}"
            print(f"timing {key} sampling ...", flush=True)
            results[key] = sampling_rate(args, device, method, fast, finetuned, pretrained, latent)
    for path, fast in paths.items():
        print(f"timing fine-tuning ({path}) ...", flush=True)
        results[f"finetune_{path}"] = finetune_rate(args, device, fast, finetuned, latent)
        if not args.skip_decode:
            results[f"decode_{path}"] = decode_rate(args, device, fast)
        for net in ("inception", "effnet"):
            if not args.skip_features:
                results[f"{net}_{path}"] = feature_rate(args, device, net, fast=False)  # features stay fp32
    peak = peak_tflops(name)
    for path in paths:
        guided_tflops = results[f"dog_{path}"] * 100 * fwd_flops / 1e12  # 50 steps x 2 forwards
        results[f"dog_{path}_tflops"] = guided_tflops
        results[f"dog_{path}_mfu"] = guided_tflops / peak if peak else None
        results[f"dog_over_cfg_{path}"] = results[f"dog_{path}"] / results[f"cfg_{path}"]
    results["paper_protocol_gpu_hours"] = paper_protocol_hours(results)
    return results


def print_table(r: dict) -> None:
    print(f"\n{r['device']}  {r['model']} @ {r['image_size']}px  batch {r['batch_size']}  "
          f"({r['gflops_per_forward']:.1f} GFLOP per forward)")
    print(f"{'work':<28}{'reference':>12}{'fast':>12}{'speed-up':>10}")
    for key, label in [("dog", "DoG sampling, 50 steps"), ("cfg", "CFG sampling, 50 steps"), ("none", "fine-tune only, 50 steps"),
                       ("finetune", "fine-tuning step"), ("decode", "VAE decode"), ("inception", "Inception-V3 features"),
                       ("effnet", "EffNet-Lite0 features")]:
        ref, fast = r.get(f"{key}_reference"), r.get(f"{key}_fast")
        if ref is None and fast is None:
            continue
        ratio = f"{fast / ref:.2f}x" if ref and fast else ""
        print(f"{label:<28}{ref or float('nan'):>10.2f}/s{fast or float('nan'):>10.2f}/s{ratio:>10}")
    for path in ("reference", "fast"):
        mfu = r.get(f"dog_{path}_mfu")
        print(f"DoG {path}: {r[f'dog_{path}_tflops']:.1f} TFLOP/s" + (f", MFU {mfu:.1%}" if mfu else "")
              + f", DoG/CFG {r[f'dog_over_cfg_{path}']:.3f}")
    if r.get("paper_protocol_gpu_hours"):
        print(f"paper protocol estimate with {r['model']} at these rates (fast path): "
              f"{r['paper_protocol_gpu_hours']:.1f} device-hours on this device")


def add_command(subparsers) -> None:
    cuda = torch.cuda.is_available()
    p = subparsers.add_parser("perf", help="measure sampling / fine-tuning / decoding / feature throughput",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu", help="torch device")
    p.add_argument("--model", default="DiT-XL/2" if cuda else "DiT-S/4", help="DiT config (random weights)")
    p.add_argument("--image-size", type=int, default=256 if cuda else 64, help="image side in pixels")
    p.add_argument("--in-channels", type=int, default=4, help="4 = SD-VAE latents, 3 = pixel space")
    p.add_argument("--num-classes", type=int, default=101, help="classes of the fine-tuned model")
    p.add_argument("--batch-size", type=int, default=256 if cuda else 8, help="sampling batch (images)")
    p.add_argument("--train-batch-size", type=int, default=32 if cuda else 8, help="fine-tuning batch (images)")
    p.add_argument("--decode-batch-size", type=int, default=64 if cuda else 2, help="VAE decode batch")
    p.add_argument("--feature-batch-size", type=int, default=256 if cuda else 4, help="feature network batch")
    p.add_argument("--measure-steps", type=int, default=5 if cuda else 2, help="denoising steps timed (reported at 50)")
    p.add_argument("--repeat", type=int, default=3 if cuda else 1, help="timed repetitions (median)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=cuda, help="torch.compile the fast path")
    p.add_argument("--skip-decode", action="store_true", help="do not time the VAE")
    p.add_argument("--skip-features", action="store_true", help="do not time the feature networks")
    p.add_argument("--out", default=None, help="JSON path (default: results/perf/perf-<device>-<time>.json)")
    p.set_defaults(func=perf_command)


def perf_command(args) -> int:
    results = run_perf(args)
    print_table(results)
    slug = "".join(c if c.isalnum() else "-" for c in results["device"]).strip("-").lower()[:40]
    out = Path(args.out) if args.out else results_root() / "perf" / f"perf-{slug}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from benchmark.cli import main

    raise SystemExit(main(["perf", *__import__("sys").argv[1:]]))
