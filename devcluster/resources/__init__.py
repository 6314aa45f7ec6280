"""The resource types devcluster serves, and what each kind does on create and update.

A `ResourceType` is one resource in one served API version (`pods` in `v1`,
`lmtrainingjobs` in `elasticlm.io/v1alpha1`). Several versions of a custom resource
share their storage, as they do in Kubernetes (conversion strategy `None`: only
`apiVersion` changes), and `events.k8s.io/v1` events are a view of the core `v1`
events with the fields renamed, as in Kubernetes.

A `Strategy` holds a kind's defaulting and validation, like the registry strategies
of the Kubernetes API server: pods are bound to the node and get the API defaults,
services get a cluster IP from a loopback range, claims are bound at once, custom
resources are admitted through their CRD's schema, and CRDs are checked for
structural schemas.

Modules: `types` (`ResourceType`, the converters, the `Strategy` base and its `Env`),
`fields` (name rules and field errors), `strategies` (the built-in kinds), `apps`
(Deployments and ReplicaSets), `crds`
(custom resources and CRDs), `registry` (`Registry` and the built-in types), `times`
(time fields as Kubernetes writes them), `jsonpath` (the JSONPaths of CRDs).
"""
