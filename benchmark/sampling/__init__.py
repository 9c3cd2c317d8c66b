"""Sampling: seed-exact batched sampling of fine-tune-only / CFG / DoG, and resumable sample folders."""
from benchmark.sampling.generate import build_sampler, generate_samples, sampling_config
from benchmark.sampling.sampler import Sampler, sample_inputs, sample_seed, to_uint8
from benchmark.sampling.writer import SampleFolder

__all__ = ["Sampler", "SampleFolder", "build_sampler", "generate_samples", "sample_inputs", "sample_seed",
           "sampling_config", "to_uint8"]
