"""Sampling: seed-exact batched sampling of any guidance method, and resumable sample folders."""
from benchmark.sampling.build import build_sampler, make_denoiser, sampler_identity, spec_models
from benchmark.sampling.generate import generate_samples
from benchmark.sampling.point import method_spec
from benchmark.sampling.sampler import Sampler, sample_inputs, sample_seed, to_uint8
from benchmark.sampling.settings import SamplingSettings
from benchmark.sampling.writer import SampleFolder

__all__ = ["Sampler", "SampleFolder", "SamplingSettings", "build_sampler", "generate_samples", "make_denoiser",
           "method_spec", "sample_inputs", "sample_seed", "sampler_identity", "spec_models", "to_uint8"]
