"""``dogbench sample``: fill a folder with PNG samples of fine-tune only, CFG or DoG."""
from __future__ import annotations

import os

from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.devices import resolve_device
from benchmark.io import cached_file_sha256
from benchmark.models import load_autoencoder, load_dit, resolve_checkpoint
from benchmark.sampling import SampleFolder, SamplingSettings, build_sampler, generate_samples, sampler_identity
from benchmark.sampling.settings import SamplePoint


def configure(p, name: str) -> None:
    p.add_argument("--finetuned", required=True, help="fine-tuned checkpoint (.pt; its EMA weights are used)")
    p.add_argument("--pretrained", default=None,
                   help="pre-trained source checkpoint, DoG's guide (e.g. DiT-XL-2-256x256.pt); needed for --method dog")
    p.add_argument("--out", required=True, help="output folder (resumes when it holds samples of the same config)")
    add_settings_flags(p.add_argument_group("what to sample"), SamplePoint)
    add_settings_flags(p.add_argument_group("how (sampling settings)"), SamplingSettings)
    p.add_argument("--vae", default=None, help="'identity', 'sd-vae-ft-ema' or a local diffusers folder "
                                               "(default: the checkpoint's; sd-vae-ft-ema for 4-channel models)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="discard samples of another config in --out")
    p.set_defaults(func=run)


def autoencoder_spec(spec, checkpoint_meta: dict, in_channels: int) -> str:
    if spec:
        return spec
    return checkpoint_meta.get("autoencoder") or ("sd-vae-ft-ema" if in_channels == 4 else "identity")


def run(args) -> int:
    point = settings_from_args(SamplePoint, args)
    settings = settings_from_args(SamplingSettings, args)
    device = resolve_device(args.device)
    ft_path = resolve_checkpoint(args.finetuned)
    finetuned = load_dit(ft_path)
    pre_path = pretrained = None
    if point.method == "dog" and point.w != 1.0:
        if not args.pretrained:
            raise ValueError("--method dog needs --pretrained CKPT (the source model, e.g. DiT-XL-2-256x256.pt)")
        pre_path = resolve_checkpoint(args.pretrained)
        pretrained = load_dit(pre_path)
    ae_spec = autoencoder_spec(args.vae, finetuned.checkpoint_meta, finetuned.config["in_channels"])
    autoencoder = load_autoencoder(ae_spec)
    sampler = build_sampler(settings, point.method, point.w, point.seed, finetuned, pretrained, autoencoder, device)
    identity = sampler_identity(settings, point.method, point.w, point.seed, finetuned_sha256=cached_file_sha256(ft_path),
                                pretrained_sha256=cached_file_sha256(pre_path) if pre_path else None, autoencoder=ae_spec)
    folder = SampleFolder(args.out, settings.num_samples, identity).open(overwrite=args.overwrite)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    made = generate_samples(sampler, folder, settings.batch_size, rank, world)
    print(f"{made} new samples in {args.out} ({settings.num_samples - len(folder.missing())}/{settings.num_samples} done)")
    return 0
