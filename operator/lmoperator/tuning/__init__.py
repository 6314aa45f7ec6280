"""LMTuningJob's search, pure: Optuna's Grid, Random and TPE samplers, our Greedy and
simulated annealing samplers, early stopping with Optuna's pruners, and the sharing of
workers among running trials.

No I/O, no clock, no torch (import-linter contracts): the reconciler passes in the
trials recorded in status, and every decision is a function of them and the job's seed.

- `space`: parameters as Optuna distributions; values as status text; the unit interval.
- `samplers`: GreedySampler and AnnealingSampler (Optuna BaseSampler subclasses).
- `search`: the study rebuilt from status; suggestions, early stopping, the best trial,
  range warnings.
- `allocate`: workers for the running trials under spec.budget.maxReplicas.
"""
