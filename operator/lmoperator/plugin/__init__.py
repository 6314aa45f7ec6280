"""`kubectl lm`: get, scale, logs and describe for ElasticLM's kinds.

`resources` names the kinds as kubectl does; `tables`, `describe` and `loglines` turn
objects and log lines into text (pure, unit-tested); `commands` reads the cluster
through `lmoperator.kube` and prints. The same commands are `elasticlm get|scale|logs|
describe`. Nothing here imports kopf, torch or devcluster: `pip install elasticlm` is
all the plugin needs.
"""
