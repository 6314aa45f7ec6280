"""Automatic scaling: pure decisions from metrics, history and the time of day.

Nothing here does I/O or reads a clock: every function takes `now` (seconds since the
epoch, a float) and the observations, and returns a decision with its reason and the
figures behind it. The operator's handlers feed it (through `loop`) from the server
pods' scrapes and write its answers through the scale subresource.

- `hpa`: the Kubernetes HorizontalPodAutoscaler's documented algorithm (replica
  calculator and behavior controller), a faithful port used as a baseline.
- `kpa`: Knative's KPA (stable and panic windows), a faithful port used as a baseline.
- `policy`: ours for LMService (several signals, missing metrics never read as zero,
  warm-up and Pending pods handled, scheduled floors, a cold-start-aware forecast).
- `loop`: an LMService's autoscaler in the operator: the policy's inputs from the pods
  and their scrapes, manual changes noticed, what goes into the scaling history.
- `forecast`: the seasonal forecaster behind the predictive term.
- `schedule`: cron windows with time zones (scheduled replica floors).
- `training`: ours for LMTrainingJob (a fitted scaling curve, Throughput and Goodput).

docs/autoscaling.md describes the algorithms and every reason code.
"""
