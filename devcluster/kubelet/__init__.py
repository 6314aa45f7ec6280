"""The devcluster kubelet: runs the pods bound to its node as local processes.

It is a plain HTTP client of the Kubernetes REST API (`api_url`): it lists and watches
the pods with `spec.nodeName=<node_name>` in all namespaces, runs their containers,
writes `status` through the status subresource (JSON merge patch) and removes deleted
pods once their processes are gone. It shares nothing else with the API server, so it
would drive a real API server just the same.

Processes
---------
Each container is a process of the current Python environment: the image is recorded
in the status, never pulled. argv is `command + args` (`args` alone when `command` is
missing: devcluster has no image entrypoints), with `$(VAR)` expanded as Kubernetes
does. A first word `python`, `python3` or `python3.X` runs `sys.executable`, and a bare
name found next to it (the virtual environment's `bin`, e.g. `torchrun`) runs from
there; other names are looked up on PATH. The process starts in its own session
(`start_new_session=True`), stdin from /dev/null, stdout and stderr appended to
`paths.container_log_file()`; on a restart the previous run's log moves to
`paths.previous_log_file()` (for `kubectl logs --previous`). The environment is the
kubelet's own (PATH, HOME, PYTHONPATH, ...) and `extra_env`, plus what the container
declares: literal values, fieldRef (`metadata.name|namespace|uid|labels['x']|
annotations['x']`,
`spec.nodeName`, `spec.serviceAccountName`, `status.podIP`, `status.hostIP`),
resourceFieldRef, configMapKeyRef, secretKeyRef, envFrom; the service link variables
(`<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT>`) of the
services in the pod's namespace when the container starts; `KUBERNETES_SERVICE_HOST` and
`_PORT` pointing at the API server (`service_url`: devcluster's HTTPS endpoint); and
`HOSTNAME` (the pod's name). `workingDir` defaults to a per-container directory in the
pod's directory; a workingDir that does
not exist on this machine (and is not under a volume mount) falls back to it, with a
note in the container's log.

A container is all the processes started from it: its process group, plus any
descendant that left the group (torchrun starts its workers in new sessions), found by
the `DEVCLUSTER_CONTAINER_ID` variable every process inherits. When the main process
exits, whatever is left of the container gets SIGKILL, as a container runtime does when
PID 1 exits. Termination sends SIGTERM to the process group (after the preStop hook,
if any), waits up to the grace period, then SIGKILLs all of the container's processes.
Processes left behind by a kubelet that died without stopping (same state directory)
are killed when the next kubelet starts. (Finding descendants by their environment
needs Linux's /proc; elsewhere only the process group is signalled.)

Networking
----------
Each pod gets its own loopback address from `pod_cidr` (default 127.10.0.0/16; all of
127/8 reaches `lo` on Linux; handed out round robin from a random start, so that two
devclusters on one machine rarely collide), reported as `status.podIP`/`podIPs` and
released when the pod is gone; `hostNetwork` pods get the host IP (127.0.0.1). Programs must bind to
their pod IP (learn it with a fieldRef to `status.podIP`), not to 0.0.0.0: every pod
shares the machine's ports. Probes and the service proxy connect to podIP:port.
Service names do not resolve (no DNS); use the service environment variables.

Volumes (how devcluster stands in for mounts)
---------------------------------------------
Each volume is a local directory: emptyDir, configMap, secret, downwardAPI and projected
volumes under `paths.volume_dir()` (configMap and secret files written from the data at
pod start, secret data base64-decoded, `items` key -> path and modes honoured, secret
files mode 0600 unless `defaultMode` says otherwise); persistentVolumeClaim under
`paths.claim_dir()` (it outlives pods); hostPath as is. The kubelet REWRITES each mount
path (plus its `subPath`) to that directory in the container's command, args, env values
and workingDir, on whole path tokens, longest mount path first (see
`podspec.PathRewriter`): with a volume `data` mounted at `/data`, the argument
`--out=/data/ckpt` becomes `--out=<state>/pods/<ns>_<pod>_<uid>/volumes/data/ckpt`.
It also exports `DEVCLUSTER_MOUNT_<VOLUME>` (upper case, non-alphanumerics as `_`) with
the local directory of each volume the container mounts. Paths a program hard-codes or
reads from files are not rewritten.

Where the machine allows it (Linux, root: checked once at start, `mount_namespaces`),
each container also starts in a private mount namespace (`mountns`) with its volumes
bind-mounted at their real mount paths (read-only ones read-only), without creating
anything on the machine: missing mount points are made in a tmpfs copy of `/` that the
container is chrooted into. Mounts that would hide devcluster's state directory or its
Python environment are left out (their paths stay rewritten). Without mount namespaces
`readOnly` is not enforced.

Service-account tokens: a projected `serviceAccountToken` source gets a token from
TokenRequest (`POST .../serviceaccounts/<sa>/token`, bound to the pod, with the
source's audience and expirationSeconds); the projected volumes are rewritten with fresh
tokens at 80 % of the shortest token's lifetime, as the kubelet's token manager does.
The API server's ServiceAccount admission adds such a volume to every pod (see
`devcluster.resources.serviceaccounts`), mounted at
/var/run/secrets/kubernetes.io/serviceaccount with the cluster CA and the namespace.

Probes, restarts, status
------------------------
startupProbe, livenessProbe and readinessProbe (httpGet to the pod IP, tcpSocket, exec
run locally with the container's environment; grpc probes are not supported: they fail
with a message saying so) with Kubernetes' defaults and thresholds. Ready and
ContainersReady follow readiness (no readiness probe: ready once running and started); a
failed liveness or startup probe kills the container, which restarts per restartPolicy.
terminationMessagePath: the file a container writes there (the path is rewritten like a
mount) becomes `terminated.message`, capped at 4 KiB; FallbackToLogsOnError falls back to
the log's tail on failure. restartPolicy Always, OnFailure and Never apply with the
kubelet's back-off: the first restart is immediate, then `backoff_base` doubling up to
`backoff_max` (Kubernetes: 10 s and 300 s; devcluster defaults to 1 s and 30 s), reset
after a run of `2 * backoff_max`.
Init containers run first, in order, each to completion. Container states (waiting
ContainerCreating / PodInitializing / CrashLoopBackOff / CreateContainerConfigError,
running, terminated with exitCode, signal, reason Completed / Error / StartError),
lastState, restartCount, the pod phase (Pending, Running, Succeeded, Failed) and the
PodReadyToStartContainers, Initialized, ContainersReady and Ready conditions are
reported as the kubelet does. A command that cannot start (no such executable) ends in
`terminated` with reason StartError (exit code 128) and the OS error, in the status and
in the container's log. The kubelet also posts Events (Pulled, Created, Started,
Killing, Unhealthy, BackOff, Failed, FailedMount, DeadlineExceeded) for `kubectl
describe`; they are best effort (dropped when the API cannot take them).

Deletion: when a pod gets a deletionTimestamp, the preStop hooks run, then SIGTERM,
SIGKILL after `deletionGracePeriodSeconds`, a last status, and `DELETE ...
?gracePeriodSeconds=0` with a uid precondition. A pod that vanishes from the API
(force-deleted) has its processes killed the same way, with the grace period capped at
`stop_timeout`. `activeDeadlineSeconds` fails the pod with reason
DeadlineExceeded.

Simulate mode (`simulate=True`): no processes. Pods go straight to Running and Ready
with a pod IP, and are deleted at once when they get a deletionTimestamp. Status
writes and deletions go through bounded, batched queues: thousands of pods need no
thread and no task per pod.

Robustness: every task catches and logs its exceptions, so one pod never affects
another; API errors back off and retry; watches resume or relist (see
`devcluster.informer`), so the kubelet survives an API server restart.

Modules
-------
`node` (`Kubelet`: the pod watch and what pods share), `pod` (`Pod`: a pod whose
containers run as processes), `mountns` and `mountns_runner` (mount namespaces),
`lifecycle` (`Container`: runs, restarts, termination, container status), `probes`
(probes and lifecycle hooks), `processes` (finding and killing a container's processes),
`volumes` (volume directories), `status` (the status writer and the batched queues),
`simulate` (`SimPod`) and `base` (what both kinds of pod share). The pure helpers (what a
pod spec means on this machine) are `devcluster.podspec`.
"""
