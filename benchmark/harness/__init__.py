"""The benchmark harness: ``dogbench run --exp experiments/NAME.yaml`` fine-tunes, samples (none, cfg, dog over a
w grid), evaluates and reports, resumably, for every dataset of an experiment; ``dogbench sweep`` searches w.

- ``config``: the typed, validated experiment (YAML + ``key.sub=value`` overrides) and each stage's identity.
- ``stages`` / ``run``: the stage orchestration and the ``dogbench run`` command.
- ``sweep``: the Optuna search over w.
- ``leaderboard``: runs.csv -> leaderboard.csv (best w per method, DoG's improvement) and its markdown.
- ``plots``: metric-vs-w figures and sample grids.
- ``tracking``: optional Weights & Biases logging (offline without credentials; never fails a run).

Submodules are imported explicitly (``from benchmark.harness.config import load_experiment``), so that reading a
config does not import W&B or matplotlib.
"""
