"""Networks: DiT (checkpoint-exact), checkpoint loading and re-heading, and the autoencoders (SD-VAE / identity)."""
from benchmark.models.checkpoint import CheckpointError, export_checkpoint, load_dit, reheaded, resolve_checkpoint
from benchmark.models.autoencoder import DEFAULT_VAE, IdentityAutoencoder, KLAutoencoder, load_autoencoder
from benchmark.models.dit import DiT, DiT_models, build_dit, dit_config, dit_flops_per_forward

__all__ = ["DEFAULT_VAE", "DiT", "DiT_models", "build_dit", "dit_config", "dit_flops_per_forward", "load_dit",
           "reheaded", "export_checkpoint", "resolve_checkpoint", "CheckpointError", "IdentityAutoencoder", "KLAutoencoder",
           "load_autoencoder"]
