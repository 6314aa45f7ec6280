"""Workload controllers of devcluster: apps/v1 ReplicaSets and Deployments, run next to
the API server as kube-controller-manager runs them next to kube-apiserver.

Modules: the decisions are pure (`pods`: readiness, availability and the scale-down
victim order; `rollout`: surge and unavailability arithmetic, `rollout_step`,
proportional scaling, history; `status`: a Deployment's status and conditions;
`templates`: pod-template-hash, ReplicaSets from Deployments, pods from ReplicaSets,
revision annotations); `replicaset` and `deployment` are the controllers that carry
them out over the cluster; `events` records their Events; `loop` schedules their passes
(`WorkloadControllers`).
"""
