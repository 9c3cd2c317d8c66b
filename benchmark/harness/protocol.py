"""PROTOCOL.md: every choice that can move the numbers, with this run's value, the value the paper states (where it
states one) and the value of the public DogFit code (yaramohamadi/DogFit, which also runs the fine-tune-only, CFG
and DoG baselines; read from its scripts, train script and the dgm-eval command it calls).

The paper column holds only what could be checked against the paper's own text (its abstract, its dataset list and
one appendix sentence, quoted second-hand); everything else is marked unchecked rather than guessed. Where the paper's
official repository (thuml/DomainGuidance) README shows code, it is noted.

The same table goes into the W&B leaderboard run's config, so a number can always be traced to its protocol.
"""
from __future__ import annotations

from pathlib import Path

from benchmark.harness.experiment import Experiment
from benchmark.io import atomic_write_text
from benchmark.metrics.card import protocol_lines
from benchmark.metrics.registry import METRICS

UNCHECKED = "unchecked"

# field -> (the paper, the public DogFit code)
REFERENCE_VALUES = {
    "fine-tune data": ("a train partition (stated for SUN397: 76,128 training images)",
                       "the full image folder (train + test), the same images it scores against"),
    "fine-tune steps": (UNCHECKED, "24,000"),
    "fine-tune batch": (UNCHECKED, "32 (16 per GPU on 2 GPUs)"),
    "learning rate": (UNCHECKED, "1e-4 constant, AdamW, weight decay 0"),
    "EMA decay": (UNCHECKED, "0.9999, from the pre-trained weights"),
    "label dropout": (UNCHECKED, "0.1 (the null label trains CFG's unconditional branch)"),
    "fine-tune precision": (UNCHECKED, "fp32 weights, TF32 matmuls, no autocast"),
    "sampling precision": (UNCHECKED, "fp32 with TF32 matmuls"),
    "decoding precision": (UNCHECKED, "fp32 (SD-VAE ft-EMA)"),
    "sampler": (UNCHECKED, "DDPM ancestral, 50 respaced steps, x0 not clipped"),
    "guided channels": ("unchecked; the official README's snippet guides all 4 eps channels",
                        "3 of the 4 latent eps channels (DiT's forward_with_cfg), for CFG and DoG"),
    "guidance interval": (UNCHECKED, "none (every step)"),
    "samples per setting": (UNCHECKED, "10,048 written, 10,000 drawn by dgm-eval"),
    "labels": (UNCHECKED, "uniform at random per sample (torch.randint)"),
    "reference set": (UNCHECKED, "the fine-tuning folder itself (train + test)"),
    "reference size": (UNCHECKED, "10,000: dgm-eval --nsample 10000 subsamples both sets (seed 13579)"),
    "preprocessing": (UNCHECKED, "dgm-eval --clean_resize: per-channel float PIL bicubic straight to 299 "
                                 "(Inception) / 224 (DINOv2), no crop; real JPEGs squashed to square"),
    "w selection": (UNCHECKED, "fixed w = 1.5"),
    "intervals": ("none reported in the abstract's headline (19.6% FID, 23.4% FD_DINOv2 vs standard fine-tuning)",
                  "none (one run)"),
    "feature networks": (UNCHECKED, "dgm-eval's Inception-V3 (FID) and DINOv2 ViT-L/14 (FD_DINOv2)"),
    "source checkpoint": ("DiT-XL/2 256x256 (ImageNet)", "DiT-XL-2-256x256.pt"),
    "fine-tuned weights": (UNCHECKED, UNCHECKED),
}
NOT_YET = "recorded in runs.csv once a sample set is evaluated"


def _distinct(runs, column: str) -> list[str]:
    """The distinct non-empty values of a runs.csv column (each row records the networks and checkpoints it used)."""
    if runs is None or column not in getattr(runs, "columns", ()):
        return []
    return sorted({str(v) for v in runs[column].dropna() if str(v) not in ("", "nan")})


def run_values(exp: Experiment, runs=None) -> dict[str, str]:
    """This run's value of every field of the table; the feature networks' and the source's hashes come from the
    runs.csv rows (``runs``) the leaderboard is built from."""
    ft, s, e = exp.finetune, exp.sampling, exp.evaluation
    networks = sorted({METRICS[m].space for m in e.metrics})
    resize = {"inception": "299", "dinov2": "224", "effnet": "224 (128 for images <= 64 px)"}
    return {
        "fine-tune data": ("all images (train + test)" if ft.split == "all" else "the train split")
                          + (", the same images the reference holds" if ft.split == e.ref_split or e.ref_split == "all"
                             and ft.split == "all" else ""),
        "fine-tune steps": f"{ft.steps:,}",
        "fine-tune batch": str(ft.global_batch_size),
        "learning rate": f"{ft.lr:g} constant, AdamW, weight decay {ft.weight_decay:g}",
        "EMA decay": f"{ft.ema_decay:g}",
        "label dropout": f"{ft.label_dropout:g}",
        "fine-tune precision": f"{ft.precision} on GPU (CPU runs train in fp32)",
        "sampling precision": s.precision + (" + torch.compile" if s.compile else
                                             " (torch.compile on CUDA)" if s.compile is None else ""),
        "decoding precision": s.decode_precision,
        "sampler": f"DDPM ancestral, {s.steps} respaced steps" + (", x0 clipped" if s.clip_denoised else
                                                                   ", x0 not clipped"),
        "guided channels": "all" if s.guided_channels is None else f"the first {s.guided_channels}",
        "guidance interval": "none (every step)" if s.guidance_interval is None else
        f"timesteps {s.guidance_interval[0]:g}-{s.guidance_interval[1]:g}",
        "samples per setting": f"{s.num_samples:,} per report seed x {len(exp.report.seeds)} report seed(s); "
                               f"selection: {exp.selection_num_samples():,} x {len(exp.selection.seeds)} seed(s)",
        "labels": "uniform at random per sample, drawn from (seed, index)",
        "reference set": {"all": "all images (train + test)", "train": "the train split",
                          "test": "the test split"}[e.ref_split],
        "reference size": f"all images, a seeded subset beyond {e.max_reference_images:,}" if e.reference == "all"
        else "a seeded subset as large as the sample set (dgm-eval --nsample)",
        "preprocessing": "clean resize (per-channel float PIL bicubic, no crop) to "
                         + ", ".join(f"{n} {resize[n]}" for n in networks)
                         + "; real images as stored (squashed when not square), samples as generated",
        "w selection": f"best mean {e.select_by} on selection seeds {exp.selection.seeds} over w in "
                       f"{exp.w_values()}; reported on report seeds {exp.report.seeds}"
                       + (f"; fixed-w rows {exp.report.fixed_w}" if exp.report.fixed_w else ""),
        "intervals": f"{exp.report.level:.0%} bootstrap over sample indices ({exp.report.bootstrap} resamples, "
                     f"reference fixed); paired differences",
        # metric=network:sha256 prefix of its weights, as each row of runs.csv records them
        "feature networks": "; ".join(_distinct(runs, "feature_networks")) or NOT_YET,
        "source checkpoint": f"{exp.source.checkpoint} ({exp.source.model if isinstance(exp.source.model, str) else 'DiT'}"
                             + "".join(f", sha256 {h[:12]}" for h in _distinct(runs, "pretrained_sha256")) + ")",
        "fine-tuned weights": "every weight" if ft.adapter is None else
        f"LoRA (peft) rank {ft.adapter.rank}, alpha {ft.adapter.alpha:g}, dropout {ft.adapter.dropout:g} on "
        f"{', '.join(ft.adapter.targets)}, the new label table in full, the rest frozen; DoG's guide is the same "
        f"weights with the adapter off",
    }


def protocol_table(exp: Experiment, runs=None) -> list[dict]:
    values = run_values(exp, runs)
    return [{"setting": name, "this run": values[name], "paper": paper, "DogFit code": dogfit}
            for name, (paper, dogfit) in REFERENCE_VALUES.items()]


def to_markdown(exp: Experiment, runs=None) -> str:
    lines = [f"# Protocol of {exp.name}", "",
             "Every choice that can move the numbers: this run's value, the paper's (Zhong et al., ICLR 2025) where it "
             "could be checked against its text (\"unchecked\" otherwise: only the abstract, the dataset list and one "
             "appendix sentence were available), and the public DogFit code's (yaramohamadi/DogFit, its baseline "
             "scripts and the dgm-eval command they run).", "",
             "| setting | this run | paper | DogFit code |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['this run']} | {r['paper']} | {r['DogFit code']} |" for r in protocol_table(exp, runs)]
    card = protocol_lines(exp.evaluation.metrics, exp.finetune.split)
    if card:  # each metric of the card once, and which split the copy rate calls train and held out
        lines += ["", "## The metric card", "", "Beyond the Frechet distances and PRDC, in the same bootstrap "
                  "(intervals, paired differences against CFG and fine-tune only):", ""]
        lines += [f"- {line}" for line in card]
    return "\n".join(lines) + "\n"


def write_protocol(exp: Experiment, path: Path, runs=None) -> list[dict]:
    """PROTOCOL.md for ``exp``; ``runs``: the runs.csv rows it reports (their feature networks and checkpoints)."""
    atomic_write_text(path, to_markdown(exp, runs))
    return protocol_table(exp, runs)
