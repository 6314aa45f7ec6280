"""Pure helpers of the devcluster kubelet: what a pod spec means on this machine.

Modules: `common` (shared types, metav1.Time), `env` (a container's environment),
`volumes` (volume directories and mount paths), `lifecycle` (commands, restarts),
`probes`, `status` (phase, conditions, QoS), `ips` (pod IPs).

Nothing here does I/O; `devcluster.kubelet` fetches the objects, calls these functions
and applies their results. Every function follows the documented Kubernetes semantics
where devcluster can (environment variables and `$(VAR)` expansion, service links,
restart back-off, pod phase and conditions, probe defaults) and says where it cannot.

Mounts without a mount namespace
--------------------------------
A container's `volumeMounts[].mountPath` cannot exist as such: every pod shares this
machine's file system. Each volume is mapped to a local directory instead, and
`PathRewriter` rewrites a mount path (plus its `subPath`) to that directory wherever
it appears as a whole path token in the container's command, args, env values and
workingDir (longest mount path first). See the `devcluster.kubelet` docstring.
"""
