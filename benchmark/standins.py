"""Stand-ins for every weight file of the paper's protocol, for dry runs and GPU checks on machines that hold none
of the released files: the real architectures with random weights, written where the project's lookup finds them,
and a small Caltech-101-layout folder of real images (from the shared 32x32 copy). Every metric computed with them
is meaningless; they exercise the code paths, memory and speed of the protocol, never its numbers.

    python -m benchmark.standins OUT_DIR                 # writes them, prints the overrides and environment
    python -m benchmark.standins OUT_DIR --dit-model DiT-S/2 --image-size 64

What is written (each file in the layout its loader reads with ``strict=True``):

    OUT_DIR/checkpoints/DiT-XL-2-256x256.pt    a raw DiT state dict under the release name ($DOGBENCH_CHECKPOINTS)
    OUT_DIR/sd-vae-ft-ema/                     diffusers AutoencoderKL with sd-vae-ft-ema's config (autoencoder: PATH)
    OUT_DIR/pt_inception-standin.pth           the FID Inception state dict (weights.inception; not under the
                                               release name, whose hash prefix the loader checks)
    OUT_DIR/dinov2/hubconf.py                  a torch.hub folder whose dinov2_vitl14 is a ViT-L/14 in DINOv2's
                                               state-dict layout (weights.dinov2_hub_dir)
    OUT_DIR/dinov2_vitl14_pretrain.pth         its random weights (weights.dinov2_weights)
    OUT_DIR/data/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg   real images (data_root)
    (not by default) clip-vit-large-patch14-336/   ``write_clip``: a transformers CLIPModel folder with the CMMD
                                               release's config (--clip-weights / weights.clip), for tests
    OUT_DIR/standins.json                      what was written and with which settings (reruns skip finished files)
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from benchmark.io import atomic_torch_save, atomic_write_json, data_root, read_json
from benchmark.metrics import dinov2, inception
from benchmark.models import DEFAULT_VAE, build_dit
from benchmark.models.checkpoint import CHECKPOINT_DIR_ENV, RELEASES

# stabilityai/sd-vae-ft-ema's config.json (what AutoencoderKL needs of it; the rest are diffusers' defaults)
SD_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                     layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=256)
# DINOv2's ViT-L/14 as torch.hub builds it: 518-pixel position grid (37 x 37 patches), LayerScale, no registers
VITL14 = dict(img_size=518, patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0)
# openai/clip-vit-large-patch14-336's config.json (CMMD's CLIP): the two towers and their shared projection width
CLIP_L14_336 = dict(
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                       patch_size=14, image_size=336, hidden_act="quick_gelu", projection_dim=768),
    text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                     max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768),
    projection_dim=768)
MANIFEST = "standins.json"


# ---- DINOv2's ViT, in the state-dict layout of dinov2_vitl14_pretrain.pth ----------------------------------------


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ViTBlock(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); names as in the DINOv2 weights."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layer_scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)
        self.ls2 = LayerScale(dim, layer_scale)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, N, D)
        x = x + self.ls1(self.attn.proj(attended))
        return x + self.ls2(self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))))


class DinoViT(nn.Module):
    """A Vision Transformer with DINOv2's parameter names and shapes (cls_token, pos_embed for ``img_size``,
    mask_token, patch_embed.proj, blocks.N.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}, norm), so a
    state dict of the released backbone loads into it with ``strict=True``. ``forward`` returns the final-norm CLS
    token, like the hub model; the position table is resized bicubically to the input's patch grid."""

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, layer_scale: float = 1.0):
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 1e-6)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, embed_dim) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList([ViTBlock(embed_dim, num_heads, mlp_ratio, layer_scale) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def position_table(self, rows: int, cols: int) -> Tensor:
        table = self.pos_embed[:, 1:]
        grid = int(math.isqrt(table.shape[1]))
        if (rows, cols) != (grid, grid):
            table = table.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
            table = F.interpolate(table.float(), size=(rows, cols), mode="bicubic", align_corners=False)
            table = table.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(self.pos_embed.dtype)
        return torch.cat([self.pos_embed[:, :1], table], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = tokens + self.position_table(rows, cols)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


HUBCONF = '''\
# A torch.hub folder for `dogbench`: dinov2_vitl14 is a random-weight stand-in with DINOv2's ViT-L/14 architecture
# and state-dict layout (benchmark.standins.DinoViT), not the released model. Written by benchmark.standins.
dependencies = ["torch"]

CONFIG = {config!r}


def dinov2_vitl14(*, pretrained=True, **kwargs):
    if pretrained:
        raise RuntimeError("this stand-in hub folder has no downloadable weights: load with pretrained=False")
    import torch
    from benchmark.standins import DinoViT

    with torch.device("meta"):  # no random initialisation: the caller loads the weights into it
        model = DinoViT(**CONFIG)
    return model.to_empty(device="cpu")
'''


# ---- writers ------------------------------------------------------------------------------------------------------


def dit_file_name(model: str, image_size: int) -> str:
    """The release file name for the released configurations (DiT-XL-2-256x256.pt), the same pattern otherwise."""
    return f"{model.replace('/', '-')}-{image_size}x{image_size}.pt"


def write_dit(path: Path, model: str = "DiT-XL/2", image_size: int = 256, num_classes: int = 1000,
              seed: int = 0) -> Path:
    """A random DiT source model as a raw state dict (the release's format): DiT's own initialisation, with the
    adaLN-Zero and output layers (zero at initialisation, which would make the model the zero function) drawn from
    N(0, 0.02) so that every block does real work."""
    torch.manual_seed(seed)
    net = build_dit(model, input_size=image_size // 8, in_channels=4, num_classes=num_classes)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "adaLN_modulation" in name or name.startswith("final_layer.linear"):
                p.normal_(0, 0.02)
    atomic_torch_save(net.state_dict(), path)
    return path


def write_sd_vae(folder: Path, seed: int = 0) -> Path:
    """diffusers' AutoencoderKL with sd-vae-ft-ema's architecture and random weights, as a local folder
    (config.json + diffusion_pytorch_model.safetensors)."""
    from diffusers import AutoencoderKL  # ~2 s to import; only this writer needs it

    torch.manual_seed(seed)
    AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(folder)
    return folder


def write_fid_inception(path: Path, seed: int = 0) -> Path:
    """The FID Inception-V3 state dict (pytorch-fid's key layout) with random weights. The BatchNorm statistics are
    those of noise images passed through it: with the default running statistics (mean 0, variance 1) the
    activations of random convolutions shrink to ~1e-8 over the 94 layers, and every Frechet distance would be ~0."""
    torch.manual_seed(seed)
    net = inception.FIDInceptionV3()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # running statistics = the average over the batches seen: here, this one batch
    with torch.no_grad():
        net.train()(torch.rand(2, 3, inception.INPUT_SIZE, inception.INPUT_SIZE))
    atomic_torch_save(net.state_dict(), path)
    return path


def write_dinov2(hub_dir: Path, weights: Path, config: Optional[dict] = None, seed: int = 0) -> tuple[Path, Path]:
    """A torch.hub folder (hubconf.py with ``dinov2_vitl14``) and a random state dict for it; ``config`` defaults to
    ViT-L/14 (tests pass a small one)."""
    config = dict(config or VITL14)
    hub_dir.mkdir(parents=True, exist_ok=True)
    (hub_dir / "hubconf.py").write_text(HUBCONF.format(config=config))
    torch.manual_seed(seed)
    atomic_torch_save(DinoViT(**config).state_dict(), weights)
    return hub_dir, weights


def write_clip(folder: Path, config: Optional[dict] = None, seed: int = 0) -> Path:
    """A transformers CLIPModel (text and vision towers, as the release holds) with random weights, saved like
    ``save_pretrained`` (config.json + model.safetensors); ``config`` defaults to CLIP_L14_336 (tests pass small
    towers)."""
    from transformers import CLIPConfig, CLIPModel  # ~7 s to import; only CMMD needs it

    config = dict(config or CLIP_L14_336)
    torch.manual_seed(seed)
    text = dict(config["text_config"])
    if text.get("vocab_size", 49408) < 49408:  # a small test vocabulary: the release's special tokens lie outside it
        text.setdefault("bos_token_id", 0)
        text.setdefault("eos_token_id", 1)
    CLIPModel(CLIPConfig(**{**config, "text_config": text})).save_pretrained(folder)
    return folder


def write_caltech101(root: Path, classes: int = 3, per_class: int = 6, size: Optional[int] = None,
                     shared: Optional[Path] = None) -> Path:
    """``per_class`` real images of each of the first ``classes`` Caltech-101 classes, from the shared 32x32 copy
    (caltech101/caltech101_32.npz under the data root), laid out as the official archive unpacks:
    ``root/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg``. ``size``: upscale (bicubic) to this side."""
    npz = Path(shared or data_root()) / "caltech101" / "caltech101_32.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"{npz} not found: the Caltech-101 stand-in is made from the shared 32x32 copy; "
                                f"pass --shared-data DIR holding caltech101/caltech101_32.npz")
    data = np.load(npz)
    shutil.rmtree(root / "caltech101", ignore_errors=True)  # a rewrite with fewer classes leaves none behind
    base = root / "caltech101" / "101_ObjectCategories"
    for k in range(classes):
        name = str(data["class_names"][k])
        for i, row in enumerate(np.flatnonzero(data["labels"] == k)[:per_class]):
            image = Image.fromarray(data["images"][row])
            if size:
                image = image.resize((size, size), Image.BICUBIC)
            path = base / name / f"image_{i + 1:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="JPEG", quality=95)
    return root


# ---- all of them ------------------------------------------------------------------------------------------------


def standin_paths(out_dir: Path, model: str = "DiT-XL/2", image_size: int = 256) -> dict[str, Path]:
    out_dir = Path(out_dir).resolve()
    return {"checkpoint": out_dir / "checkpoints" / dit_file_name(model, image_size),
            "autoencoder": out_dir / DEFAULT_VAE,
            "inception": out_dir / "pt_inception-standin.pth",  # the release name would fail its hash check
            "dinov2_hub_dir": out_dir / "dinov2",
            "dinov2_weights": out_dir / dinov2.WEIGHTS_FILENAME,
            "data_root": out_dir / "data"}


def write_standins(out_dir: str | Path, model: str = "DiT-XL/2", image_size: int = 256, classes: int = 3,
                   per_class: int = 6, seed: int = 0, shared: Optional[Path] = None, log=print) -> dict[str, Path]:
    """Write every stand-in into ``out_dir`` (skipping those a previous call wrote with the same settings); returns
    their paths (``standin_paths``)."""
    out_dir = Path(out_dir)
    paths = standin_paths(out_dir, model, image_size)
    manifest = read_json(out_dir / MANIFEST, {})
    jobs = {
        "checkpoint": ({"model": model, "image_size": image_size, "seed": seed},
                       lambda: write_dit(paths["checkpoint"], model, image_size, seed=seed)),
        "autoencoder": ({"config": DEFAULT_VAE, "seed": seed}, lambda: write_sd_vae(paths["autoencoder"], seed)),
        "inception": ({"seed": seed, "batchnorm": "noise statistics"}, lambda: write_fid_inception(paths["inception"], seed)),
        "dinov2": ({"config": VITL14, "seed": seed},
                   lambda: write_dinov2(paths["dinov2_hub_dir"], paths["dinov2_weights"], seed=seed)),
        "data": ({"classes": classes, "per_class": per_class},
                 lambda: write_caltech101(paths["data_root"], classes, per_class, shared=shared)),
    }
    written = {"checkpoint": paths["checkpoint"], "autoencoder": paths["autoencoder"] / "config.json",
               "inception": paths["inception"], "dinov2": paths["dinov2_weights"],
               "data": paths["data_root"] / "caltech101"}
    for what, (settings, write) in jobs.items():
        key = f"{what}:{paths['checkpoint'].name}" if what == "checkpoint" else what
        if manifest.get(key) == json.loads(json.dumps(settings)) and written[what].exists():
            continue
        log(f"standins: writing {what} {settings} ...")
        write()
        manifest[key] = settings
        atomic_write_json(out_dir / MANIFEST, manifest)
    return paths


def experiment_overrides(paths: dict[str, Path], model: str = "DiT-XL/2", image_size: int = 256) -> list[str]:
    """``dogbench run`` overrides that point an experiment (paper.yaml) at the stand-ins."""
    return [f"source.checkpoint={paths['checkpoint']}", f"source.model={model}", f"source.image_size={image_size}",
            f"autoencoder={paths['autoencoder']}", f"weights.inception={paths['inception']}",
            f"weights.dinov2_hub_dir={paths['dinov2_hub_dir']}", f"weights.dinov2_weights={paths['dinov2_weights']}",
            f"data_root={paths['data_root']}", "datasets=[caltech101]",
            "source.sanity_check=false"]  # random weights do not denoise: the source probe would refuse them


def environment(paths: dict[str, Path]) -> dict[str, str]:
    """Environment variables that make the default lookups find the stand-ins (the release name, the data)."""
    return {CHECKPOINT_DIR_ENV: str(paths["checkpoint"].parent), "DOGBENCH_DATA": str(paths["data_root"])}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.standins", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write the stand-ins into (about 4.5 GB with DiT-XL/2)")
    p.add_argument("--dit-model", default="DiT-XL/2", help="source DiT architecture (default: DiT-XL/2)")
    p.add_argument("--image-size", type=int, default=256, help="image side in pixels; latents are 1/8 (default: 256)")
    p.add_argument("--classes", type=int, default=3, help="Caltech-101 classes in the data folder (default: 3)")
    p.add_argument("--per-class", type=int, default=6, help="real images per class (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random weight (default: 0)")
    p.add_argument("--shared-data", default=None, help="folder with caltech101/caltech101_32.npz (default: the data root)")
    args = p.parse_args(argv)
    if args.image_size % 8:
        p.error(f"--image-size {args.image_size} is not a multiple of 8 (the VAE downsamples by 8)")
    paths = write_standins(args.out_dir, args.dit_model, args.image_size, args.classes, args.per_class, args.seed,
                           Path(args.shared_data) if args.shared_data else None)
    release = paths["checkpoint"].name in RELEASES
    print("\n# experiment overrides (dogbench run --exp paper ...):")
    print(" ".join(experiment_overrides(paths, args.dit_model, args.image_size)))
    print("\n# or, for the default lookups" + (" (source.checkpoint stays the release name)" if release else "") + ":")
    for key, value in environment(paths).items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
