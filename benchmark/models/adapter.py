"""LoRA fine-tunes through ``peft``: the adapter spec (``finetune.adapter``), wrapping a source DiT, the small export
and rebuilding a fine-tuned model from base + adapter, and the pre-trained model as a view of the same weights.

A LoRA fine-tune is the source DiT itself (no copy) with low-rank adapters on the Linear layers ``targets`` selects
and the target's new label table; every source weight is frozen. The label table is peft's ``modules_to_save``
wrapper around the source's own table, so that switching the adapter off gives back exactly the source model: its
projections *and* its label table (row 1000 = ImageNet's null label). That is DoG's guide with one copy of the
weights (``SourceView``), and ``AdaptedDiT.forward_mixed`` runs both in one forward (peft's per-row
``adapter_names``; ``__base__`` rows see the source).

The export (``export_adapter``) holds the adapter and the label table (their EMA), the adapter spec, both DiT configs,
``source_sha256`` (of the base checkpoint file) and its own ``content_sha256``: megabytes where a full export is a
second model. ``load_dit`` recognises it and rebuilds the model from the base, which must have that hash.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Optional

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from benchmark.errors import did_you_mean
from benchmark.io import atomic_torch_save, cached_file_sha256, check_finite, content_sha256
from benchmark.models.dit import DiT
from benchmark.settings import Count, Real, Settings

ADAPTER = "default"        # peft's name of the one adapter
BASE = "__base__"          # peft's adapter name of a row that runs with the adapter off
LABEL_TABLE = "y_embedder.embedding_table"
DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
EXPORT_KEY = "adapter"     # an export holding this key is an adapter export (load_dit dispatches on it)


class AdapterSettings(Settings):
    """A parameter-efficient fine-tune (``finetune.adapter``; null = every weight trained): LoRA through peft on the
    DiT's Linear layers that ``targets`` names; the new label table is trained in full, every other weight is frozen."""

    kind: Literal["lora"] = "lora"
    """adapter type: lora"""
    rank: Count = 4
    """LoRA rank r (the low-rank update B A has r columns)"""
    alpha: Real = Field(None, gt=0)
    """LoRA alpha: the update is scaled by alpha / rank (default: the rank, i.e. scale 1)"""
    dropout: Real = Field(0.0, ge=0, lt=1)
    """dropout on the adapter's input, drawn per optimizer step from the run's seed"""
    targets: list[str] = Field(list(DEFAULT_TARGETS), min_length=1)
    """Linear layers that get an adapter: a name selects every Linear whose dotted path contains it as whole parts:
    attn (qkv and proj of every block), mlp.fc1, adaLN_modulation (every block's and the final layer's), blocks.27"""

    @model_validator(mode="before")
    @classmethod
    def _alpha_defaults_to_rank(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("alpha") is None:
            data = {**data, "alpha": data.get("rank", cls.model_fields["rank"].default)}
        return data

    @field_validator("targets")
    @classmethod
    def _targets_exist(cls, value: list) -> list:
        template = _template_linear_names()
        for target in value:  # block indices are checked against the real depth when the model is wrapped
            if not _selected(template, re.sub(r"(^|\.)blocks\.\d+(?=\.|$)", r"\1blocks.0", target)):
                parts = [name.split(".") for name in template]
                names = sorted({".".join(p[i:j]) for p in parts for i in range(len(p))
                                for j in range(i + 1, len(p) + 1)})
                raise ValueError(f"adapter target {target!r} matches no Linear layer of a DiT"
                                 f"{did_you_mean(target, names)} (e.g. {', '.join(DEFAULT_TARGETS)}, "
                                 f"adaLN_modulation)")
        return list(dict.fromkeys(value))


@functools.lru_cache(maxsize=1)
def _template_linear_names() -> tuple[str, ...]:
    """The Linear layers of a one-block DiT (built on the meta device: no memory): what every DiT has."""
    with torch.device("meta"):
        model = DiT(input_size=2, patch_size=1, in_channels=1, hidden_size=8, depth=1, num_heads=1)
    return tuple(n for n, m in model.named_modules() if isinstance(m, nn.Linear))


def _selected(names, target: str) -> list[str]:
    """The names among ``names`` that hold ``target``'s dotted parts as consecutive whole parts."""
    return [n for n in names if f".{target}." in f".{n}."]


def adapter_modules(model: nn.Module, targets) -> list[str]:
    """The Linear layers of ``model`` that ``targets`` select, in model order; a target that selects none is a
    ValueError naming it."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = set()
    for target in targets:
        hits = _selected(names, target)
        if not hits:
            depth = len(getattr(model, "blocks", ()))
            raise ValueError(f"finetune.adapter.targets: {target!r} matches no Linear layer of the source DiT "
                             f"(depth {depth}); name layers it has, e.g. {', '.join(DEFAULT_TARGETS)}")
        chosen.update(hits)
    return [n for n in names if n in chosen]


# ---------------------------------------------------------------------------------------------------------------
# The fine-tuned model and the pre-trained model inside it


class AdaptedDiT(nn.Module):
    """A LoRA fine-tune with the DiT interface (``forward(x, t, y)``, ``config``, ``num_classes``, ``null_label``):
    the source DiT wrapped by peft, labels in the target's classes (null = K)."""

    def __init__(self, peft_model: nn.Module, config: dict, source_config: dict, settings: AdapterSettings,
                 modules: list[str]):
        super().__init__()
        self.peft = peft_model
        self.config, self.source_config = dict(config), dict(source_config)
        self.adapter, self.adapter_modules = settings, list(modules)
        self.num_classes = int(config["num_classes"])
        self.checkpoint_meta: dict = {}
        self.checkpoint_path: Optional[str] = None

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def dit(self) -> DiT:
        """The source DiT inside peft's wrapper (its Linear layers carry the adapter)."""
        return self.peft.base_model.model

    @property
    def y_embedder(self):
        """The DiT's label embedder; its ``embedding_table`` is the target's table while the adapter is on."""
        return self.dit.y_embedder

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self.peft(x, t, y)

    def forward_mixed(self, x: Tensor, t: Tensor, y: Tensor, adapted: int) -> Tensor:
        """One forward over a mixed batch: rows ``[0, adapted)`` are the fine-tune (labels in its classes), the rest
        the source model (adapter off, labels in the source's classes). Inference only (peft's rule)."""
        return self.peft(x, t, y, adapter_names=[ADAPTER] * adapted + [BASE] * (len(x) - adapted))

    def source_view(self) -> "SourceView":
        """The pre-trained model, sharing every weight with this one (DoG's guide with one copy)."""
        return SourceView(self)

    def trainable_names(self) -> list[str]:
        """The names (in this module) of the weights a fine-tune trains: the adapter and the label table."""
        return [n for n, p in self.named_parameters() if ".lora_" in n or f".modules_to_save.{ADAPTER}." in n]

    def trainable_state(self, state: Optional[dict] = None) -> dict[str, Tensor]:
        """The trained weights by their name in the DiT (``blocks.0.attn.qkv.lora_A.default.weight``, ...), from
        ``state`` (e.g. an EMA's, keyed like this module) or from this module."""
        own = dict(self.named_parameters())
        state = state if state is not None else own
        prefix = "peft.base_model.model."
        return {n[len(prefix):]: state[n].detach() for n in self.trainable_names()}


class SourceView(nn.Module):
    """The source model inside a LoRA fine-tune: the same module called with the adapter off, which also selects the
    source's own label table (peft's ``modules_to_save`` original), so its null label is the source's (1000)."""

    def __init__(self, adapted: AdaptedDiT):
        super().__init__()
        self.adapted = adapted
        self.config = dict(adapted.source_config)
        self.num_classes = int(self.config["num_classes"])
        self.checkpoint_meta = {"source_of": adapted.checkpoint_path}
        self.checkpoint_path = adapted.checkpoint_meta.get("source")

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def y_embedder(self):
        """The source's label table (read-only view: what ``spec_models`` checks for a null-label row)."""
        table = self.adapted.dit.y_embedder.embedding_table.original_module
        return SimpleNamespace(embedding_table=table, num_classes=self.num_classes)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        # peft's disable_adapter() context first inspects every layer's status (milliseconds per call for DiT-XL/2,
        # every sampling step): its tuner's public switch does the same switching without that
        tuner = self.adapted.peft.base_model
        tuner.disable_adapter_layers()
        try:
            return self.adapted.peft(x, t, y)
        finally:
            tuner.enable_adapter_layers()


def is_adapted(model) -> bool:
    return isinstance(model, AdaptedDiT)


def source_view(model) -> Optional[SourceView]:
    """DoG's guide inside ``model`` when it is a LoRA fine-tune (one copy of the weights), else None."""
    return model.source_view() if is_adapted(model) else None


def with_adapter(source: DiT, num_classes: int, settings: AdapterSettings, seed: Optional[int] = None,
                 modules: Optional[list[str]] = None) -> AdaptedDiT:
    """``source`` itself (not a copy) with a LoRA adapter on the layers ``settings.targets`` selects (or exactly
    ``modules``) and a fresh label table for ``num_classes`` + the null row (N(0, 0.02) from ``seed``, the draw
    ``reheaded`` makes); every source weight frozen. The adapter's initialisation is drawn from ``seed`` too."""
    from peft import LoraConfig, get_peft_model  # peft imports transformers: seconds, so only when used

    settings = AdapterSettings.parse(settings, "finetune.adapter")
    if num_classes < 1:
        raise ValueError(f"a target domain needs at least one class, got {num_classes}")
    modules = list(modules) if modules is not None else adapter_modules(source, settings.targets)
    source_config = dict(source.config)
    source_path = getattr(source, "checkpoint_path", None)
    config = {**source_config, "num_classes": num_classes,
              "class_dropout_prob": source_config["class_dropout_prob"] or 0.1}  # the fine-tune needs a null row
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=modules, modules_to_save=[LABEL_TABLE], init_lora_weights=True)
    source.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        peft_model = get_peft_model(source, lora)
    table = peft_model.base_model.model.y_embedder.embedding_table  # ModulesToSaveWrapper
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    hidden = table.original_module.embedding_dim
    weight = torch.randn((num_classes + 1, hidden), generator=generator) * 0.02  # no draw from the global generator
    table.modules_to_save[ADAPTER] = nn.Embedding.from_pretrained(weight.to(table.original_module.weight.device),
                                                                  freeze=False)
    # the label dropout a DiT draws in train mode replaces labels by the (fine-tune's) null row; the source view
    # runs in eval mode only
    peft_model.base_model.model.y_embedder.num_classes = num_classes
    model = AdaptedDiT(peft_model, config, source_config, settings, modules)
    wanted = set(model.trainable_names())
    for name, p in model.named_parameters():
        p.requires_grad_(name in wanted)
    model.checkpoint_meta = {"source": source_path} if source_path else {}
    return model


# ---------------------------------------------------------------------------------------------------------------
# Export and rebuild


def export_adapter(model: AdaptedDiT, path, ema_state: Optional[dict] = None, **metadata) -> None:
    """Save the small export of a LoRA fine-tune: the trained weights (``ema_state``'s, keyed like ``model``, else
    the model's own), the adapter spec, both configs, the base checkpoint's path and sha256, ``metadata`` and the
    export's ``content_sha256``. ``load_dit`` rebuilds the fine-tuned model from it and the base."""
    weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.trainable_state(ema_state).items()}
    source = metadata.get("source") or model.checkpoint_meta.get("source")
    if not metadata.get("source_sha256"):
        if not source:
            raise ValueError("an adapter export needs the base checkpoint's path or sha256 (metadata source=...)")
        metadata["source_sha256"] = cached_file_sha256(source)
    obj = {EXPORT_KEY: model.adapter.to_dict(), "adapter_modules": list(model.adapter_modules),
           "adapter_weights": weights, "config": dict(model.config), "source_config": dict(model.source_config),
           **metadata}
    # the adapter is nothing without its base: recorded as an absolute path (and found by name when it moves)
    obj["source"] = str(Path(source).resolve()) if source else None
    obj["content_sha256"] = content_sha256(obj)
    atomic_torch_save(obj, path)


def is_adapter_export(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get(EXPORT_KEY), dict) and "adapter_weights" in obj


def base_checkpoint(obj: dict, path, base=None) -> Path:
    """The base checkpoint of the adapter export ``obj`` (read from ``path``): ``base`` when given (the experiment's
    source, ``--pretrained``), else the path it recorded, else that file's name in the checkpoint search dirs; its
    sha256 must be the recorded one. Every failure is one CheckpointError line."""
    from benchmark.models.checkpoint import CheckpointError, resolve_checkpoint

    want, recorded = obj.get("source_sha256"), obj.get("source")
    candidates = [base] if base is not None else [c for c in (recorded, recorded and Path(recorded).name) if c]
    found = None
    for candidate in candidates:
        try:
            found = resolve_checkpoint(candidate, download=False)
            break
        except CheckpointError:
            if base is not None:
                raise
    if found is None:
        raise CheckpointError(f"{path} is a LoRA adapter of {recorded}, which is not found; pass that source "
                              f"checkpoint (--pretrained, or the experiment's source.checkpoint)")
    got = cached_file_sha256(found)
    if want and got != want:
        raise CheckpointError(f"{path} is a LoRA adapter of a base with sha256 {want}, but {found} has sha256 {got}; "
                              f"pass the source checkpoint it was fine-tuned from")
    return found


def load_adapted(obj: dict, path, base=None, num_classes: Optional[int] = None) -> AdaptedDiT:
    """The fine-tuned model of an adapter export: its base (``base_checkpoint``) loaded and wrapped as when it was
    trained, the trained weights assigned (every one present, nothing extra)."""
    from benchmark.models.checkpoint import CheckpointError, load_dit

    config = obj["config"]
    if num_classes is not None and config["num_classes"] != num_classes:
        raise CheckpointError(f"{path} has {config['num_classes']} classes but {num_classes} were requested; "
                              f"pass the matching --num-classes")
    base_path = base_checkpoint(obj, path, base)
    source = load_dit(base_path, model=dict(obj["source_config"]))
    try:
        settings = AdapterSettings.parse(obj[EXPORT_KEY], "adapter")
        model = with_adapter(source, config["num_classes"], settings, modules=obj["adapter_modules"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}; it does not fit its base {base_path}") from None
    weights = obj["adapter_weights"]
    expected = model.trainable_state()
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    shapes = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise CheckpointError(f"{path}: adapter weights do not fit (first: {first}); re-export it from its fine-tune")
    check_finite(weights, path, "a fine-tune that diverged to NaN needs a lower learning rate")
    with torch.no_grad():
        for name, value in weights.items():
            expected[name].copy_(value.float() if value.is_floating_point() else value)
    model.checkpoint_meta = {k: v for k, v in obj.items()
                             if k not in ("adapter_weights", "content_sha256") and not isinstance(v, Tensor)}
    model.checkpoint_path = str(path)
    return model.eval().requires_grad_(False)
