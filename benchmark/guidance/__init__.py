"""Guidance methods as plug-ins, and the one denoiser that runs them.

    spec = resolve_method("dog", {"w": 2.0, "interval": "0,700", "eta": 0.0})   # validated once
    denoiser = GuidedDenoiser(spec, {"finetuned": ft, "pretrained": pre}, alphas_cumprod=...)

A method is a ``Method`` (method.py): its guides, parameters and combination rule. Built-ins (builtin.py): none, cfg,
dog, cfg+dog, autoguidance; every guided method also takes ``interval`` (LOW,HIGH timesteps) and APG's ``eta`` and
``norm_threshold`` (projection.py). A user's method is named ``module:attribute`` wherever a method name goes.
"""
from benchmark.guidance import builtin
from benchmark.guidance.denoiser import GuidedDenoiser
from benchmark.guidance.method import (FINETUNED, INTERVAL, PRETRAINED, Guide, Method, MethodSpec, Param,
                                       lookup_method, register_method, registered_methods, resolve_method, scale_param)
from benchmark.guidance.projection import ETA, NORM_THRESHOLD, project_update
from benchmark.guidance.scale import (DEFAULT_GUIDED_CHANNELS, W_DECIMALS, W_MAX, W_MIN, GuidanceInterval,
                                      GuidanceScale, cfg, check_guidance_scale, dog, guide)

BUILTIN_METHODS = tuple(m.name for m in builtin.BUILTIN)

__all__ = ["BUILTIN_METHODS", "DEFAULT_GUIDED_CHANNELS", "ETA", "FINETUNED", "INTERVAL", "NORM_THRESHOLD", "PRETRAINED",
           "W_DECIMALS", "W_MAX", "W_MIN", "Guide", "GuidanceInterval", "GuidanceScale", "GuidedDenoiser", "Method",
           "MethodSpec", "Param", "cfg", "check_guidance_scale", "dog", "guide", "lookup_method", "project_update",
           "register_method", "registered_methods", "resolve_method", "scale_param"]
