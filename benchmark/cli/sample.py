"""``dogbench sample``: fill a folder with PNG samples of one guidance method (fine-tune only, CFG, DoG, cfg+dog,
autoguidance, or a user's ``module:attribute``) at its parameters."""
from __future__ import annotations

import os

from benchmark.cli.common import index_list, output_folder, progress_wanted, quiet_third_party
from benchmark.cli.flags import add_settings_flags, flag_values, settings_from_args
from benchmark.devices import resolve_device
from benchmark.errors import UserError, did_you_mean
from benchmark.guidance import FINETUNED, INTERVAL, PRETRAINED, MethodSpec, lookup_method
from benchmark.data.latents import is_pixel_space
from benchmark.io import cached_file_sha256
from benchmark.models import DEFAULT_VAE, load_autoencoder, load_dit, resolve_checkpoint
from benchmark.models.adapter import source_view
from benchmark.sampling import (SampleFolder, SamplingSettings, build_sampler, generate_samples, method_spec,
                                sampler_identity)
from benchmark.sampling.settings import SamplePoint


CLIP_FROM_CHECKPOINT = ("from the checkpoint: on for pixel-space models (identity autoencoder, 3 input channels), "
                        "off for latent ones")


def configure(p, name: str) -> None:
    p.description = ("Sample one guidance method at its parameters into a folder of PNG shards with a manifest "
                     "(the config, each image's sha256 and class label); rerunning the same command resumes.")
    p.add_argument("--finetuned", required=True, metavar="PATH",
                   help="fine-tuned checkpoint (.pt; its EMA weights are used)")
    p.add_argument("--pretrained", default=None, metavar="PATH",
                   help="pre-trained source checkpoint, DoG's guide (e.g. DiT-XL-2-256x256.pt); needed for --method dog; "
                        "for a LoRA export, its base (default: none; a LoRA export's recorded base)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (resumes when it holds samples of the same config)")
    what = p.add_argument_group("what to sample")
    add_settings_flags(what, SamplePoint)
    what.add_argument("--classes", default=None, metavar="A,B,...",
                      help="sample only these class indices of the fine-tune, e.g. 0,3,7; sample i's label is drawn "
                           "among them from its (seed, i) generator (default: all classes)")
    what.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a method parameter, repeatable: e.g. --param w_cfg=1.5 --param w_dog=2 (cfg+dog), "
                           "--param eta=0 --param norm_threshold=50 (APG), --param interval=0,700 "
                           "(default: the method's defaults)")
    what.add_argument("--guide-checkpoint", action="append", default=[], metavar="NAME=PATH",
                      help="an extra checkpoint a method's guide needs, repeatable: e.g. weak=run/ema-step2000.pt "
                           "(autoguidance) (default: none)")
    add_settings_flags(p.add_argument_group("how (sampling settings)"), SamplingSettings,
                       defaults={"clip_denoised": CLIP_FROM_CHECKPOINT})
    p.add_argument("--vae", default=None, metavar="NAME|DIR",
                   help=f"'identity', '{DEFAULT_VAE}' or a local diffusers folder (default: the checkpoint's; "
                        f"{DEFAULT_VAE} for 4-channel models)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="discard samples of another config in --out (default: off)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars, and no third-party tips or warnings (default: bars on a terminal)")
    p.set_defaults(func=run)


def autoencoder_spec(spec, checkpoint_meta: dict, in_channels: int) -> str:
    if spec:
        return spec
    return checkpoint_meta.get("autoencoder") or (DEFAULT_VAE if in_channels == 4 else "identity")


def name_values(items: list[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed or repeated name is a one-line error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise UserError(f"{flag} {item!r} must be NAME=VALUE, e.g. {flag} w=1.5")
        if name in out:
            raise UserError(f"{flag} gives {name!r} twice; give it once")
        out[name] = value.strip()
    return out


def method_from_args(args, point: SamplePoint, settings: SamplingSettings) -> MethodSpec:
    """The method and its parameters from --method, --w, --param and --guidance-interval, folded once
    (``method_spec``)."""
    method, _ = lookup_method(point.method)
    params: dict = name_values(args.param, "--param")
    typed = flag_values(SamplePoint, args)
    has_w = any(p.name == "w" for p in method.params)
    if "w" in typed and not has_w:
        names = ", ".join(p.name for p in method.params) or "no scale"
        raise UserError(f"--w: method {point.method} has no parameter w ({names}); pass --param NAME=VALUE")
    if "w" in typed and "w" in params:
        raise UserError("w is given by --w and by --param w=...; give it once")
    if settings.guidance_interval is not None and method.guides and INTERVAL in params:
        raise UserError("the interval is given by --guidance-interval and by --param interval=...; give it once")
    return method_spec(point.method, params, {"w": params.pop("w", point.w)} if has_w else None,
                       interval=settings.guidance_interval)


def sample_classes(args, num_classes: int):
    """--classes as a sorted tuple checked against the fine-tune's classes, or None (all classes)."""
    if args.classes is None:
        return None
    classes = index_list(args.classes, "--classes")
    outside = [c for c in classes if c >= num_classes]
    if outside:
        raise UserError(f"--classes {outside[0]}: the fine-tune has {num_classes} classes (0..{num_classes - 1})")
    return tuple(sorted(classes))


def run(args) -> int:
    if args.no_progress:
        quiet_third_party()
    point = settings_from_args(SamplePoint, args)
    settings = settings_from_args(SamplingSettings, args)
    spec = method_from_args(args, point, settings)
    if args.classes is not None:
        index_list(args.classes, "--classes")  # the syntax now; the range once the checkpoint is read
    checkpoints = name_values(args.guide_checkpoint, "--guide-checkpoint")
    guide_models = {g.model for g in spec.method.guides} - {FINETUNED, PRETRAINED}
    for name in checkpoints:
        if name not in guide_models:
            raise UserError(f"--guide-checkpoint {name}=...: method {point.method} has no guide checkpoint {name!r}"
                            f"{did_you_mean(name, guide_models)} (it takes {', '.join(sorted(guide_models)) or 'none'})")
    device = resolve_device(args.device)
    output_folder(args.out)  # before any model is loaded: a read-only or wrong --out loses nothing
    ft_path = resolve_checkpoint(args.finetuned)
    finetuned = load_dit(ft_path, base=args.pretrained)  # a LoRA export: rebuilt on its base, checked by sha256
    needed = spec.models()
    pre_path = pretrained = pre_sha256 = None
    if PRETRAINED in needed and source_view(finetuned) is not None:  # LoRA: the guide is the same weights, adapter off
        pretrained, pre_sha256 = source_view(finetuned), finetuned.checkpoint_meta["source_sha256"]
    elif PRETRAINED in needed:
        if not args.pretrained:
            raise ValueError(f"--method {point.method} needs --pretrained CKPT (the source model, e.g. "
                             f"DiT-XL-2-256x256.pt)")
        pre_path = resolve_checkpoint(args.pretrained)
        pretrained = load_dit(pre_path)
    guide_paths, guides = {}, {}
    for name in needed:
        if name in (FINETUNED, PRETRAINED):
            continue
        if name not in checkpoints:
            raise ValueError(f"--method {point.method} needs the guide checkpoint {name!r}; pass --guide-checkpoint "
                             f"{name}=PATH (e.g. an earlier EMA export of this fine-tune, ema-stepN.pt)")
        guide_paths[name] = resolve_checkpoint(checkpoints[name])
        guides[name] = load_dit(guide_paths[name])
    classes = sample_classes(args, finetuned.num_classes)
    ae_spec = autoencoder_spec(args.vae, finetuned.checkpoint_meta, finetuned.config["in_channels"])
    if args.clip_denoised is None:  # the checkpoint decides: pixel-space models want x0 clipped to [-1, 1]
        settings = settings.replaced(clip_denoised=is_pixel_space(ae_spec) and finetuned.config["in_channels"] == 3)
    autoencoder = load_autoencoder(ae_spec)
    sampler = build_sampler(settings, spec, point.seed, finetuned, pretrained, autoencoder, device, guides)
    sampler.classes = classes
    identity = sampler_identity(settings, spec, point.seed, finetuned_sha256=cached_file_sha256(ft_path),
                                pretrained_sha256=cached_file_sha256(pre_path) if pre_path else pre_sha256,
                                autoencoder=ae_spec,
                                guide_sha256={name: cached_file_sha256(path) for name, path in guide_paths.items()},
                                classes=classes)
    folder = SampleFolder(args.out, settings.num_samples, identity).open(overwrite=args.overwrite)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    made = generate_samples(sampler, folder, settings.batch_size, rank, world, progress=progress_wanted(args))
    folder.mark_complete()  # under torchrun the last rank to finish finds nothing missing and marks the set complete
    print(f"{made} new samples in {args.out} ({settings.num_samples - len(folder.missing())}/{settings.num_samples} done)")
    return 0
