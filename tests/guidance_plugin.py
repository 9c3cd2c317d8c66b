"""A user's own guidance method, the README's example: ``dogbench sample --method guidance_plugin:mixed_null``."""
from benchmark.guidance import Guide, Method, Param, scale_param


def mixed_rule(eps, deltas, params):
    """Away from a blend of the two unconditional predictions: mix = 0 is CFG, mix = 1 is DoG."""
    mix = params["mix"]
    return eps + (params["w"] - 1.0) * ((1.0 - mix) * deltas["uncond"] + mix * deltas["source_uncond"])


mixed_null = Method(
    "mixed-null", mixed_rule,
    guides=(Guide("uncond", "finetuned", "null", scale="w"), Guide("source_uncond", "pretrained", "null", scale="w")),
    params=(scale_param("w"), Param("mix", 0.0, 1.0, default=0.5, doc="weight of the pre-trained model's guide")),
)


def make_mixed_null():
    """A factory works too: ``--method guidance_plugin:make_mixed_null``."""
    return mixed_null


not_a_method = 42
