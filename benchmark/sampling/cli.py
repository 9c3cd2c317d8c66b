"""``dogbench sample``: fill a folder with PNG samples of fine-tune only, CFG or DoG."""
from __future__ import annotations

import argparse
import os

import torch

from benchmark.guidance import GuidanceInterval, check_guidance_scale


def parse_guided_channels(text: str):
    return None if text == "all" else int(text)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_command(subparsers) -> None:
    p = subparsers.add_parser("sample", help="sample fine-tune only / CFG / DoG into a folder of PNGs",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--finetuned", required=True, help="fine-tuned checkpoint (.pt; EMA weights are used)")
    p.add_argument("--pretrained", default=None, help="pre-trained source checkpoint (DoG's guide), e.g. DiT-XL-2-256x256.pt")
    p.add_argument("--method", choices=("none", "cfg", "dog"), default="dog", help="guidance method")
    p.add_argument("--w", type=float, default=1.5, help="guidance scale w in [0, 20] (1 = unguided)")
    p.add_argument("--num-samples", type=int, default=10_000, help="number of images")
    p.add_argument("--out", required=True, help="output folder (resumes if it holds the same config)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (uniformly respaced DDPM)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses the generator seeded by (seed, i)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward batch")
    p.add_argument("--vae", default=None, help="'identity', 'sd-vae-ft-ema' or a local diffusers dir "
                                               "(default: from the checkpoint; sd-vae-ft-ema for 4-channel models)")
    p.add_argument("--guided-channels", type=parse_guided_channels, default=3,
                   help="eps channels that get guidance: 3 (the DiT reference) or 'all'")
    p.add_argument("--guidance-interval", default=None, help="LOW,HIGH: guide only for timesteps in [LOW, HIGH] (0..999)")
    p.add_argument("--clip-denoised", action="store_true", help="clip predicted x0 to [-1, 1] (pixel-space models want it)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="network forward precision")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (GPU, many samples)")
    p.add_argument("--device", default=default_device(), help="torch device")
    p.add_argument("--overwrite", action="store_true", help="discard samples of another config in --out")
    p.set_defaults(func=run_sample)


def resolve_autoencoder_spec(spec, checkpoint_meta: dict, in_channels: int) -> str:
    if spec:
        return spec
    return checkpoint_meta.get("autoencoder") or ("sd-vae-ft-ema" if in_channels == 4 else "identity")


def run_sample(args) -> int:
    from benchmark.models import load_autoencoder, load_dit, resolve_checkpoint
    from benchmark.sampling.generate import build_sampler, checkpoint_sha256, generate_samples, sampling_config
    from benchmark.sampling.writer import SampleFolder

    w = check_guidance_scale(args.w)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be positive, got {args.num_samples}")
    interval = GuidanceInterval.parse(args.guidance_interval)
    ft_path = resolve_checkpoint(args.finetuned)
    finetuned = load_dit(ft_path)
    pre_path = pretrained = None
    if args.method == "dog" and w != 1.0:
        if not args.pretrained:
            raise ValueError("--method dog needs --pretrained CKPT (the source model, e.g. DiT-XL-2-256x256.pt)")
        pre_path = resolve_checkpoint(args.pretrained)
        pretrained = load_dit(pre_path)
    ae_spec = resolve_autoencoder_spec(args.vae, finetuned.checkpoint_meta, finetuned.config["in_channels"])
    autoencoder = load_autoencoder(ae_spec)
    sampler = build_sampler(args.method, finetuned, pretrained, w, autoencoder, steps=args.steps, seed=args.seed,
                            guided_channels=args.guided_channels, interval=interval, clip_denoised=args.clip_denoised,
                            device=args.device, precision=args.precision, compile=args.compile)
    config = sampling_config(args.method, w, finetuned_sha256=checkpoint_sha256(ft_path),
                             pretrained_sha256=checkpoint_sha256(pre_path) if pre_path else None, steps=args.steps,
                             seed=args.seed, guided_channels=args.guided_channels, interval=interval,
                             clip_denoised=args.clip_denoised, autoencoder=ae_spec, precision=args.precision)
    folder = SampleFolder(args.out, args.num_samples, config).open(overwrite=args.overwrite)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    made = generate_samples(sampler, folder, args.batch_size, rank, world)
    print(f"{made} new samples in {args.out} ({args.num_samples - len(folder.missing())}/{args.num_samples} done)")
    return 0
