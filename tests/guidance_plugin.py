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


# Step-aware rules (a fourth argument, at): DoG's arithmetic behind a condition on the step.
def dog_when(condition):
    def rule(eps, deltas, params, at):
        assert isinstance(at.t, int) and 0 <= at.progress < 1
        return eps + (params["w"] - 1.0) * deltas["source_uncond"] if condition(at) else eps
    return Method(f"dog-when-{condition.__name__}", rule, guides=(Guide("source_uncond", "pretrained", "null"),),
                  params=(scale_param("w"),))


def always(at):
    return at.t >= 0 and at.progress >= 0


def never(at):
    return at.t < 0


def early(at):
    return at.progress < 0.5


dog_always, dog_never, dog_early = dog_when(always), dog_when(never), dog_when(early)


# Broken rules: each must stop sampling with one line naming the method, its module, the step and the fix.
def _broken(name, rule):
    return Method(name, rule, guides=(Guide("source_uncond", "pretrained", "null"),), params=(scale_param("w"),))


def nan_rule(eps, deltas, params):
    return eps + deltas["source_uncond"] / 0.0 * 0.0  # 0/0: NaN everywhere


def raising_rule(eps, deltas, params):
    return eps + deltas["uncond"]  # no guide of that name


def wrong_shape_rule(eps, deltas, params):
    return eps.flatten(1)


nan_method = _broken("nan-rule", nan_rule)
raising_method = _broken("raising-rule", raising_rule)
wrong_shape_method = _broken("wrong-shape-rule", wrong_shape_rule)
