"""The built-in guidance methods, each one declaration (eps predictions; ``d_g = eps_c - eps_g``):

    none          eps_c = eps_ft(x|c)
    cfg           eps_c + (w - 1) d_uncond             uncond: the fine-tuned model, its null label K
    dog           eps_c + (w - 1) d_source_uncond      source_uncond: the frozen pre-trained model, its own null label
    cfg+dog       eps_c + (w_cfg - 1) d_uncond + (w_dog - 1) d_source_uncond
    autoguidance  eps_c + (w - 1) d_weak               weak: an earlier checkpoint of the fine-tune, the same class
                                                       (Karras et al. 2024, "Guiding a diffusion model with a bad
                                                       version of itself")
    icg           eps_c + (w - 1) d_random_class       random_class: the fine-tuned model with a random class other
                                                       than the sample's, drawn per sample from (seed, index)
                                                       (Sadat et al., ICLR 2025, independent condition guidance:
                                                       guidance for a model trained without label dropout)

Every guided method also takes a combination rule (rule=apg|cfg-zero-star|fdg, combine.py) and a schedule
(schedule=constant|interval|ramp-up|ramp-down, schedule.py), applied by the denoiser. The
arithmetic keeps the historical order of operations (``eps_c + (w - 1) * (eps_c - eps_g)``), so CFG and DoG samples
are bit-identical to those of the code before the registry.
"""
from __future__ import annotations

from typing import Mapping

from torch import Tensor

from benchmark.guidance.method import FINETUNED, PRETRAINED, RANDOM, Guide, Method, register_method, scale_param

WEAK = "weak"  # the checkpoint name autoguidance's guide is loaded under (--guide-checkpoint weak=PATH)


def unguided(eps: Tensor, deltas: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
    return eps


def extrapolate_uncond(eps: Tensor, deltas: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
    return eps + (params["w"] - 1.0) * deltas["uncond"]


def extrapolate_source_uncond(eps: Tensor, deltas: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
    return eps + (params["w"] - 1.0) * deltas["source_uncond"]


def extrapolate_both(eps: Tensor, deltas: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
    return eps + (params["w_cfg"] - 1.0) * deltas["uncond"] + (params["w_dog"] - 1.0) * deltas["source_uncond"]


def extrapolate_weak(eps: Tensor, deltas: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
    return eps + (params["w"] - 1.0) * deltas["weak"]


def extrapolate_random_class(eps: Tensor, deltas: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
    return eps + (params["w"] - 1.0) * deltas["random_class"]


NONE = register_method(Method("none", unguided, doc="fine-tune only: the conditional prediction"))
CFG = register_method(Method(
    "cfg", extrapolate_uncond, (Guide("uncond", FINETUNED, "null", "w"),), (scale_param(),),
    doc="classifier-free guidance: away from the fine-tuned model's own unconditional prediction"))
DOG = register_method(Method(
    "dog", extrapolate_source_uncond, (Guide("source_uncond", PRETRAINED, "null", "w"),), (scale_param(),),
    doc="domain guidance: away from the frozen pre-trained model's unconditional prediction"))
CFG_DOG = register_method(Method(
    "cfg+dog", extrapolate_both,
    (Guide("uncond", FINETUNED, "null", "w_cfg"), Guide("source_uncond", PRETRAINED, "null", "w_dog")),
    (scale_param("w_cfg", "CFG's scale; 1 = no CFG term"), scale_param("w_dog", "DoG's scale; 1 = no DoG term")),
    doc="CFG and DoG terms added: away from both unconditional predictions"))
AUTOGUIDANCE = register_method(Method(
    "autoguidance", extrapolate_weak, (Guide("weak", WEAK, "cond", "w"),), (scale_param(),),
    doc="autoguidance: away from an earlier checkpoint of the fine-tune, conditional on the same class "
        "(--guide-checkpoint weak=ema-stepN.pt)"))

ICG = register_method(Method(
    "icg", extrapolate_random_class, (Guide("random_class", FINETUNED, RANDOM, "w"),), (scale_param(),),
    doc="independent condition guidance: away from the fine-tuned model called with a random other class"))

BUILTIN = (NONE, CFG, DOG, CFG_DOG, AUTOGUIDANCE, ICG)
