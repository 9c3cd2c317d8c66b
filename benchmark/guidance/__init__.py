"""Guidance methods as plug-ins, and the one denoiser that runs them.

    spec = resolve_method("dog", {"w": 2.0, "rule": "cfg-zero-star", "schedule": "ramp-up"})   # validated once
    denoiser = GuidedDenoiser(spec, {"finetuned": ft, "pretrained": pre}, alphas_cumprod=..., timesteps=...)

A method is a ``Method`` (method.py): its guides, parameters and combination rule, which may see the step (``at``,
steps.py). Built-ins (builtin.py): none, cfg, dog, cfg+dog, autoguidance, icg. Every guided method also takes
combination rules that wrap it (``rule=apg|cfg-zero-star|fdg``, combine.py) and a schedule
(``schedule=constant|interval|ramp-up|ramp-down``, schedule.py); design.py crosses the three axes. ``nfe`` counts the
model forwards per image. A user's method is named ``module:attribute`` wherever a method name goes.
"""
from benchmark.guidance import builtin
from benchmark.guidance.combine import (APG, CFG_ZERO_STAR, COMBINATIONS, FDG, LINEAR, RULES, Combination, Context,
                                        low_band, optimised_scale, zero_velocity_eps)
from benchmark.guidance.denoiser import GuidanceRuleError, GuidedDenoiser, nfe
from benchmark.guidance.design import AXES, NEGATIVES, DesignCell, design_cell, design_cells
from benchmark.guidance.method import (FINETUNED, INTERVAL, PRETRAINED, RANDOM, RULE, SCHEDULE, Guide, Method,
                                       MethodSpec, Param, lookup_method, register_method, registered_methods,
                                       scale_param)
from benchmark.guidance.projection import ETA, NORM_THRESHOLD, project_update
from benchmark.guidance.resolve import resolve_method
from benchmark.guidance.scale import (DEFAULT_GUIDED_CHANNELS, W_DECIMALS, W_MAX, W_MIN, GuidanceInterval,
                                      GuidanceScale, cfg, check_guidance_scale, dog, guide)
from benchmark.guidance.schedule import SCHEDULES, Schedule
from benchmark.guidance.steps import SamplingSteps, Step

BUILTIN_METHODS = tuple(m.name for m in builtin.BUILTIN)

__all__ = ["APG", "AXES", "BUILTIN_METHODS", "CFG_ZERO_STAR", "COMBINATIONS", "DEFAULT_GUIDED_CHANNELS", "ETA", "FDG",
           "FINETUNED", "INTERVAL", "LINEAR", "NEGATIVES", "NORM_THRESHOLD", "PRETRAINED", "RANDOM", "RULE", "RULES",
           "SCHEDULE", "SCHEDULES", "W_DECIMALS", "W_MAX", "W_MIN", "Combination", "Context", "DesignCell", "Guide",
           "GuidanceInterval", "GuidanceRuleError", "GuidanceScale", "GuidedDenoiser", "Method", "MethodSpec", "Param",
           "SamplingSteps", "Schedule", "Step", "cfg", "check_guidance_scale", "design_cell", "design_cells", "dog",
           "guide", "low_band", "lookup_method", "nfe", "optimised_scale", "project_update", "register_method",
           "registered_methods", "resolve_method", "scale_param", "zero_velocity_eps"]
