"""Sampling: seed-exact batched sampling of fine-tune-only / CFG / DoG, and resumable sample folders."""
from benchmark.sampling.build import build_sampler, make_denoiser, sampler_identity
from benchmark.sampling.generate import generate_samples
from benchmark.sampling.sampler import Sampler, sample_inputs, sample_seed, to_uint8
from benchmark.sampling.settings import SamplingSettings
from benchmark.sampling.writer import SampleFolder

__all__ = ["Sampler", "SampleFolder", "SamplingSettings", "build_sampler", "generate_samples", "make_denoiser",
           "sample_inputs", "sample_seed", "sampler_identity", "to_uint8"]
