"""Structural OpenAPI v3 schemas of CustomResourceDefinitions, as kube-apiserver applies them.

For a custom resource, the API server (k8s.io/apiextensions-apiserver) in this order:

1. drops `null`s of fields that are not `nullable` (`drop_nulls`),
2. prunes fields the schema does not know (`prune`) — a warning
   `unknown field "spec.x"` each, or with `fieldValidation=Strict` a 400 BadRequest
   `strict decoding error: unknown field "spec.x"`,
3. applies the schema's defaults (`apply_defaults`),
4. validates the OpenAPI constraints (`validate`),
5. evaluates every `x-kubernetes-validations` CEL rule (`evaluate_rules`), unless step 4
   found a *blocking* error (wrong type, required, enum, too long, too many); then it adds
   "some validation rules were not checked because the object was invalid; correct the
   existing errors to complete validation" instead, as strategy.go's hasBlockingErr does.

`admit` runs all five. On updates (`old_obj` given), validation ratchets as Kubernetes
1.30+ does (CRDValidationRatcheting): errors inside a value that is unchanged from the
old object are not reported, except for CEL transition rules (those using `oldSelf`).

Error texts follow kube-apiserver (kube-openapi messages wrapped in field.Error), e.g.
`spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal
to 1`; `FieldError.describe()` gives that line and `FieldError.body()` the part after the
field, which is what a Status cause's `message` holds. Errors at the root of the object
have the field `<nil>`, as Kubernetes prints an empty field.Path.

Documented deviations and choices:

* Integer fields accept integral floats (`2.0`), as kube-openapi does (isFloatInt);
  `admit` stores them as ints, which is what a client reads back from Kubernetes.
* `pattern` uses RE2 itself (google-re2, a dependency of cel-python): `$` is end of text
  and Python-only syntax (look-arounds, backreferences) does not compile.
* `format` is checked for date-time, date, duration, byte, uuid(3/4/5), ipv4, ipv6, cidr
  and mac; other formats are accepted unchecked.
* CEL is evaluated with celpy instead of cel-go. A rule celpy cannot compile or evaluate
  (e.g. Kubernetes' extension libraries beyond the few added here, optional types) is
  not enforced and yields a warning naming the rule, never a silent pass. Runtime
  errors cel-go would also raise (no such key, division by zero, overflow, index out of
  bounds) are validation errors worded like Kubernetes'. There is no cost budget.

Modules: `prune` (steps 1-3), `validation` (step 4), `cel` (step 5), `admission`
(`admit`), `structural` (the checks of a CRD's schema when it is created), `common`
(what they share: `FieldError`, the reasons, field paths, reads of schema nodes).
"""
