"""Authentication, authorization and auditing for devcluster's API server.

- `users`: identities (`UserInfo`) and Kubernetes' group names;
- `tokens`: service-account tokens (HS256 JWTs with Kubernetes' claims);
- `authn`: who a request's bearer token says it is (401 otherwise);
- `requestinfo`: what a request asks for, as authorization attributes;
- `rbac`: Kubernetes' RBAC authorizer and its 403 wording;
- `bootstrap`: the ClusterRoles and bindings kube-apiserver ships;
- `controllers`: ClusterRole aggregation, token Secrets, the root CA ConfigMap;
- `audit`: the audit log (audit.k8s.io/v1 events as JSON lines);
- `pki`: the cluster CA and serving certificate (made with openssl).

The HTTP side (the middleware, TokenRequest and the self-subject reviews) is
`devcluster.apiserver.security`.
"""
