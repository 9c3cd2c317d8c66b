"""Sampling: seed-exact batched sampling of any guidance method, and resumable sample folders."""
from benchmark.sampling.build import build_sampler, make_denoiser, sampler_identity, spec_models
from benchmark.sampling.generate import generate_samples
from benchmark.sampling.point import method_spec
from benchmark.sampling.sampler import (Sampler, random_classes, sample_inputs, sample_seed, sample_set_nfe,
                                       sampling_timesteps, to_uint8)
from benchmark.sampling.settings import SamplingSettings
from benchmark.sampling.writer import SampleFolder, recorded_timing

__all__ = ["Sampler", "SampleFolder", "SamplingSettings", "build_sampler", "generate_samples", "make_denoiser",
           "method_spec", "random_classes", "sample_inputs", "sample_seed", "sample_set_nfe", "sampler_identity",
           "sampling_timesteps", "recorded_timing", "spec_models", "to_uint8"]
