"""The devcluster API server: the Kubernetes REST API over the in-memory store.

`create_app()` returns an aiohttp application; `serve()` starts one on a port, and
`ServerThread` runs one on a free port in a background thread (for tests and tools
that need a server next to their own event loop). `Cluster` holds the object
semantics (create, update, patch, delete, finalizers, generation, subresources)
independently of HTTP; the built-in controllers of `devcluster.gc` (garbage collector,
namespace and CRD clean-up, PVC protection, event expiry, Endpoints and EndpointSlices)
and of `devcluster.workloads` (ReplicaSets and Deployments) use it. Resource types and
per-kind rules live in `devcluster.resources`, tables in `devcluster.tables`, OpenAPI
documents in `devcluster.openapi`.

Modules: the object semantics are `cluster` (`Cluster`), `objects` (checks of one
object), `managedfields` (field ownership and server-side apply), `node`, `options`
(`Ctx`, `DeleteOptions`) and `codec` (request bodies, patch
documents); the HTTP layer is `routes` (`APIServer`: routing and verbs), `http` (what
the handlers share), `security` (authentication, RBAC authorization, the audit log,
TokenRequest and the self-subject reviews, over `devcluster.auth`), `watch`, `logs` and
`discovery`; `app` builds the cluster, its controllers and the server (`create_app`,
`ServerThread`, `serve`).

What follows Kubernetes closely: the verbs (including watch with resourceVersion,
bookmarks, `sendInitialEvents`, timeouts and 410 Expired), Status errors with
Kubernetes' reasons and messages, optimistic concurrency (409 on a stale
resourceVersion; custom resources and CRDs need one on PUT, as in Kubernetes),
generation, finalizers and deletionTimestamp, graceful pod deletion, cascading
deletion, field validation (`fieldValidation=Strict|Warn|Ignore`, warnings in
`Warning: 299` headers) and time fields re-serialized as Kubernetes does.

Deliberate simplifications:

- Field ownership (`managedFields`, server-side apply with pruning and conflicts;
  `managedfields`) follows structured-merge-diff, but built-in kinds' list types come
  from the strategic merge metadata of `devcluster.patch`, struct fields and map keys
  are not told apart, and there is no cap on the number of Update managers.
- Built-in kinds are validated for what matters here (names, labels, containers,
  ports, immutability of pod specs and cluster IPs, ...), not field by field; unknown
  fields are detected at the top level and in `metadata` only.
- Protobuf request bodies (kubectl's typed clients: `kubectl create configmap|secret|
  namespace|serviceaccount|service|deployment`) are decoded for those kinds only, and
  client-go's DeleteOptions; responses are always JSON (or YAML when asked).
- Continued lists (`continue`) read the current state after the last key served, not
  a consistent snapshot at the first page's resourceVersion.
- `pods/log`: `timestamps=true` prefixes lines with the time the server read them
  (the kubelet writes no timestamps); `sinceSeconds`/`sinceTime` are ignored.
- Every object gets `metadata.generation` (Kubernetes omits it for some core kinds).
- Bearer tokens only (the admin's, and HS256 service-account tokens); requests without
  credentials are the admin unless `anonymous="anonymous"`. RBAC is enforced for
  everyone outside system:masters, without escalation checks. No exec, attach,
  port-forward, proxy or eviction."""
