"""Import the operator's handlers into a registry of their own.

Importing lmoperator.handlers / lmoperator.main registers kopf handlers (and a startup
that loads a kubeconfig and serves metrics) in kopf's default registry. Other tests run
kopf in this process (KopfRunner) with that default registry, so the operator's handlers
are registered here, once, in a separate registry, which the original then replaces.
"""

from __future__ import annotations

import kopf

_original = kopf.get_default_registry()
kopf.set_default_registry(kopf.OperatorRegistry())
try:
    import lmoperator.handlers.trainingjob
    import lmoperator.main  # noqa: F401

    OPERATOR_REGISTRY = kopf.get_default_registry()
finally:
    kopf.set_default_registry(_original)
