"""A small MLP eps-predictor for 2D points, conditioned on the timestep and a class label (with a null row).

The structure mirrors DiT at toy scale: a sinusoidal timestep embedding and a label table are summed into one
conditioning vector that modulates (adaLN-style shift/scale) every residual block. The label table has
``num_classes + 1`` rows; the last row is the null label used for label dropout and as the unconditional branch.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) timesteps (any float scale, here 0..T-1) -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        # Start every block as the identity (as DiT zero-initialises its adaLN), so depth does not hurt early training.
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(nn.functional.silu(c)).chunk(2, dim=1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class ToyDenoiser(nn.Module):
    """``model(x, t, y) -> eps`` for x of shape (B, 2); ``y == num_classes`` is the null (unconditional) label."""

    def __init__(self, num_classes: int, hidden: int = 128, depth: int = 3, freq_dim: int = 64):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be at least 1")
        self.num_classes = num_classes
        self.freq_dim = freq_dim
        self.x_in = nn.Linear(2, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_table = new_label_table(num_classes, hidden)
        self.blocks = nn.ModuleList(ResBlock(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 2)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        c = self.t_mlp(timestep_embedding(t, self.freq_dim)) + self.label_table(y)
        h = self.x_in(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(nn.functional.silu(self.out_norm(h)))


def new_label_table(num_classes: int, hidden: int) -> nn.Embedding:
    table = nn.Embedding(num_classes + 1, hidden)
    nn.init.normal_(table.weight, std=0.02)  # DiT's initialisation of its label embedding
    return table


def reheaded_for_target(pretrained: ToyDenoiser, num_classes: int, copy_null_row: bool = False) -> ToyDenoiser:
    """A copy of ``pretrained`` with a fresh label table for ``num_classes`` target classes + null; every other weight
    kept. As when a DiT checkpoint is fine-tuned on a new label set, the whole table (null row included) is new unless
    ``copy_null_row`` starts the target's null row from the pre-trained null embedding."""
    model = copy.deepcopy(pretrained)
    model.num_classes = num_classes
    hidden = pretrained.label_table.embedding_dim
    model.label_table = new_label_table(num_classes, hidden).to(pretrained.label_table.weight.device)
    if copy_null_row:
        with torch.no_grad():
            model.label_table.weight[num_classes] = pretrained.label_table.weight[pretrained.null_label]
    return model


class ToyLoRA(nn.Module):
    """A LoRA fine-tune of ``pretrained`` through peft (the toy's twin of ``benchmark.models.adapter``): ``pretrained``
    itself (no copy) with rank-``rank`` adapters on every Linear layer of its residual blocks (the MLP and the
    adaLN-style modulation) and a fresh label table for ``num_classes`` + null, trained in full; every other weight
    frozen. ``adapter_off()`` is the pre-trained model, the same weights with the adapter switched off (its own label
    table and null label): DoG's guide with one copy of the weights."""

    def __init__(self, pretrained: ToyDenoiser, num_classes: int, rank: int, copy_null_row: bool = False):
        super().__init__()
        from peft import LoraConfig, get_peft_model  # peft imports transformers: seconds, so only when used

        targets = [n for n, m in pretrained.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]
        source_classes = pretrained.num_classes
        pretrained.requires_grad_(False)
        self.peft = get_peft_model(pretrained, LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                          modules_to_save=["label_table"]))
        wrapper = self.peft.base_model.model.label_table
        table = new_label_table(num_classes, wrapper.original_module.embedding_dim)
        if copy_null_row:
            with torch.no_grad():
                table.weight[num_classes] = wrapper.original_module.weight[source_classes]
        wrapper.modules_to_save["default"] = table
        self.num_classes, self.source_classes = num_classes, source_classes

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self.peft(x, t, y)

    def adapter_off(self) -> "ToyAdapterOff":
        return ToyAdapterOff(self)


class ToyAdapterOff(nn.Module):
    """The pre-trained model inside a ``ToyLoRA``: the same module with the adapter off."""

    def __init__(self, lora: ToyLoRA):
        super().__init__()
        self.lora = lora
        self.num_classes = lora.source_classes

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        tuner = self.lora.peft.base_model  # peft's switch, as benchmark.models.adapter.SourceView uses it
        tuner.disable_adapter_layers()
        try:
            return self.lora.peft(x, t, y)
        finally:
            tuner.enable_adapter_layers()
