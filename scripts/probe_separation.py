"""How well the source sanity probe (benchmark/training/probe.py) separates an intact source from a damaged one.

    python scripts/probe_separation.py            # about a minute on 2 CPU cores

The probe is the source's noise-prediction error on 32 target training images at its null label. Measured here on
the shipped source (benchmark/assets/source_cifar10_dit.pt, DiT-N/4 pre-trained on CIFAR-10) against Caltech-101
32x32 (the default experiment's target): the intact file under 20 draws of images and noise, and copies with 4 KiB of
weight bytes flipped in the middle of each weight tensor large enough to hold them, bit-inverted (finite values far
off their scale) and XORed with random bytes (values that would turn NaN/inf are left intact: the NaN check already
catches those). It prints one row per copy and the margins of the limit (PROBE_LIMIT) to both sides.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from benchmark.io import nonfinite_entries  # noqa: E402
from benchmark.models import load_autoencoder, load_dit  # noqa: E402
from benchmark.models.checkpoint import extract_state_dict, read_checkpoint  # noqa: E402
from benchmark.training.probe import PROBE_LIMIT, denoising_loss, probe_images  # noqa: E402
from conftest import flip_weight_bytes  # noqa: E402

SOURCE = REPO / "benchmark" / "assets" / "source_cifar10_dit.pt"
TARGET = "caltech101-32"


def finite_random_mask(weights: torch.Tensor, count: int, seed: int) -> np.ndarray:
    """Random XOR bytes for the middle ``count`` bytes of ``weights``, zeroed for each float32 they would make
    NaN/inf."""
    raw = weights.contiguous().numpy().tobytes()
    count = min(count, len(raw))
    start = (len(raw) - count) // 2
    mask = np.random.default_rng(seed).integers(1, 256, count, dtype=np.uint8)
    flipped = (np.frombuffer(raw[start:start + count], np.uint8) ^ mask).copy()
    offset = start % 4  # align the check to whole floats
    values = np.frombuffer(flipped[(4 - offset) % 4:][: (count - (4 - offset) % 4) // 4 * 4].tobytes(), np.float32)
    for i in np.flatnonzero(~np.isfinite(values)):
        at = (4 - offset) % 4 + 4 * i
        mask[at:at + 4] = 0
    return mask


def main() -> int:
    torch.set_num_threads(2)
    images = probe_images(TARGET, None, 32, load_autoencoder("identity"), n=2000)
    intact = load_dit(SOURCE).eval()
    draws = []
    for seed in range(20):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:32]
        draws.append(denoising_loss(intact, images[pick], seed=seed))
    x0 = probe_images(TARGET, None, 32, load_autoencoder("identity"))
    print(f"intact: {denoising_loss(intact, x0):.4f} on the probe's 32 images; over 20 other draws "
          f"{min(draws):.4f} .. {max(draws):.4f} (mean {np.mean(draws):.4f})")
    state = extract_state_dict(read_checkpoint(SOURCE))
    damaged = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "flipped.pt"
        for name, weights in state.items():
            if weights.numel() * weights.element_size() < 4096 or name == "pos_embed":  # pos_embed: fixed sin-cos
                continue
            for kind, mask in (("inverted", 0xFF), ("random", finite_random_mask(weights, 4096, 0))):
                flip_weight_bytes(SOURCE, copy, name, mask=mask)
                # the shipped file carries its hash: strip it to measure what the probe alone sees
                obj = torch.load(copy, weights_only=True)
                obj.pop("content_sha256", None)
                if nonfinite_entries(obj["ema"]):
                    print(f"{name:42s} {kind:8s} NaN/inf (caught before the probe)")
                    continue
                torch.save(obj, copy)
                loss = denoising_loss(load_dit(copy).eval(), x0)
                damaged.append(loss)
                passes = loss <= PROBE_LIMIT  # NaN (activations overflowing) is refused too
                print(f"{name:42s} {kind:8s} {loss:.4g}{'   <- passes' if passes else ''}")
    refused = [x for x in damaged if not x <= PROBE_LIMIT]
    finite = [x for x in refused if np.isfinite(x)]
    print(f"limit {PROBE_LIMIT}: {PROBE_LIMIT / max(draws):.1f}x above the intact source's worst draw; "
          f"{len(refused)} of {len(damaged)} damaged copies refused ({len(refused) - len(finite)} of them with a "
          f"non-finite error); the mildest refused one scores {min(finite) / PROBE_LIMIT:.1f}x the limit; the "
          f"passing ones score {max([x for x in damaged if x <= PROBE_LIMIT], default=0) / np.mean(draws):.2f}x "
          f"the intact mean at most")
    return 0


if __name__ == "__main__":
    sys.exit(main())
