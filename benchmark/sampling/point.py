"""The one fold of a sample set's method parameters into a resolved spec.

Every site that names a sample set's method calls ``method_spec``: an experiment's grid points, its fixed-w rows and
its sweep trials (``benchmark.harness.methods.MethodEntry.spec``), ``dogbench sample`` and ``dogbench perf``. So a
method's own parameters (its interval, APG's numbers) reach every sample set of that method the same way.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from benchmark.errors import ConfigError
from benchmark.guidance import INTERVAL, GuidanceInterval, Method, MethodSpec, lookup_method, resolve_method


def method_spec(method: str | Method, fixed: Optional[Mapping[str, Any]] = None,
                values: Optional[Mapping[str, Any]] = None, interval: Any = None) -> MethodSpec:
    """The validated spec of ``method`` with its ``fixed`` parameters (an experiment entry's ``params``, ``--param``),
    then the ``values`` that vary over its sample sets (a grid point, a fixed w, a sweep trial, ``--w``), and
    ``interval`` (the sampling settings' guidance interval) for a method with guides. A w = 1 given to a method
    without a scale w is the unguided point and is dropped (any other w is an error); an interval given both as a
    setting and as the method's own parameter is an error."""
    base, _ = lookup_method(method)
    params = {**(fixed or {}), **(values or {})}
    if "w" in params and not any(p.name == "w" for p in base.params):
        if float(params["w"]) != 1.0:
            raise ConfigError(f"method {base.name} has no guidance scale w (got w={params['w']}); give its "
                              f"parameters instead")
        del params["w"]
    if base.guides and GuidanceInterval.parse(interval) is not None:
        if params.get(INTERVAL) is not None:
            raise ConfigError(f"method {base.name} has an interval of its own ({params[INTERVAL]}) and the sampling "
                              f"guidance_interval is {interval}; give the guidance interval once")
        params[INTERVAL] = interval
    return resolve_method(method, params)
