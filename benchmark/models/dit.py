"""DiT: Diffusion Transformer (Peebles & Xie, 2023), with the reference implementation's parameter names and
state-dict layout, so that the released checkpoints (``DiT-XL-2-256x256.pt``) load with ``strict=True``.

Shapes: images or latents (N, C, H, W) are cut into (H/p)(W/p) patches of p x p, embedded to ``hidden_size``
tokens, processed by ``depth`` adaLN-Zero transformer blocks conditioned on c = t_emb + y_emb, and projected back
to (N, C_out, H, W) with C_out = 2C when the model also predicts the variance (``learn_sigma``).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.guidance import guide


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: per-sample affine transform of every token (shift/scale are (N, D), x is (N, T, D))."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, as one strided convolution (key ``proj``)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.num_patches = (input_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> sinusoidal frequency features -> 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    @staticmethod
    def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
        """[cos(t * f_k), sin(t * f_k)] with f_k = max_period^(-k / (dim/2)); fp32 whatever the autocast dtype."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors. Row ``num_classes`` is the null label used for classifier-free guidance; during
    training each label is replaced by it with probability ``dropout_prob`` (label dropout)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        has_null_row = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(has_null_row), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: Tensor, force_drop_ids: Optional[Tensor] = None) -> Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: Tensor, train: bool, force_drop_ids: Optional[Tensor] = None) -> Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class Attention(nn.Module):
    """Multi-head self-attention (keys ``qkv`` and ``proj``) through ``scaled_dot_product_attention``, which
    dispatches to flash / memory-efficient kernels on GPU."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        assert dim % num_heads == 0, f"hidden size {dim} is not divisible by {num_heads} heads"
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D/H)
        return self.proj(x.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    """Two-layer feed-forward with tanh-approximated GELU (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: c regresses shift/scale/gate for the attention and MLP branches; the
    gates start at zero so every block starts as the identity."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map from each token to its p x p x C_out patch."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def sincos_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, embed_dim): [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-k / (embed_dim/2))."""
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    angles = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2D position table (grid_size^2, embed_dim): half the channels encode the column, half the row
    (the MAE/DiT convention, tokens in row-major order)."""
    cols, rows = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    return np.concatenate([sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)], axis=1)


class DiT(nn.Module):
    """Diffusion model with a Transformer backbone. Constructor arguments are the reference's."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
    ):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.config = dict(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels, hidden_size=hidden_size,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, class_dropout_prob=class_dropout_prob,
            num_classes=num_classes, learn_sigma=learn_sigma,
        )
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.num_classes = num_classes

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # Fixed (not learned) but saved in the state dict, as in the reference checkpoints.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.x_embedder.num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @property
    def null_label(self) -> int:
        """The label that selects the unconditional branch (the last row of the label table)."""
        return self.num_classes

    def initialize_weights(self) -> None:
        def xavier_linear(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(xavier_linear)
        grid = int(self.x_embedder.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(self.pos_embed.shape[-1], grid)).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data  # like a linear layer over the flattened patch
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every residual branch starts switched off
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(N, T, p*p*C) -> (N, C, H, W)."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x: (N, C, H, W) noisy input; t: (N,) timesteps on the 0..999 scale; y: (N,) labels (null = num_classes)."""
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(self, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float) -> Tensor:
        """The reference's CFG forward: the batch holds the conditional half then the null-label half of the same
        inputs; both halves get uncond + s * (cond - uncond) on the first 3 eps channels, the rest unchanged."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, y)
        cond, uncond = out.chunk(2)
        eps = guide(cond[:, :3], uncond[:, :3], cfg_scale, guided_channels=None)
        return torch.cat([torch.cat([eps, eps]), out[:, 3:]], dim=1)


# Named configurations: (depth, hidden_size, num_heads). Patch sizes 2, 4, 8 as in the paper.
DIT_SIZES = {
    "XL": (28, 1152, 16),
    "L": (24, 1024, 16),
    "B": (12, 768, 12),
    "S": (12, 384, 6),
    # Small configs for 32x32 pixel-space runs on modest hardware (not in the DiT paper).
    "Ti": (12, 192, 3),
    "N": (6, 128, 4),
}
DiT_models = {f"DiT-{size}/{p}": (size, p) for size in DIT_SIZES for p in (2, 4, 8)}


def dit_config(name: str, **kwargs) -> dict:
    """Constructor arguments for a named model, e.g. ``dit_config("DiT-XL/2", input_size=32, num_classes=1000)``."""
    if name not in DiT_models:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(DiT_models)}")
    size, patch = DiT_models[name]
    depth, hidden, heads = DIT_SIZES[size]
    config = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch)
    config.update(kwargs)
    return config


def build_dit(name: str, **kwargs) -> DiT:
    return DiT(**dit_config(name, **kwargs))


def dit_flops_per_forward(config: dict) -> float:
    """Forward FLOPs of one sample (2 x multiply-accumulates of the matmuls, attention included): the basis of
    the MFU numbers reported by ``dogbench perf``."""
    D, L, p = config["hidden_size"], config["depth"], config["patch_size"]
    T = (config["input_size"] // p) ** 2
    mlp = int(D * config.get("mlp_ratio", 4.0))
    per_block = T * (3 * D * D + D * D + 2 * D * mlp) + 2 * T * T * D + 6 * D * D
    c_in, c_out = config["in_channels"], config["in_channels"] * (2 if config.get("learn_sigma", True) else 1)
    embed = T * D * c_in * p * p + T * D * p * p * c_out + 2 * D * D + 256 * D + D * D
    return 2.0 * (L * per_block + embed)
