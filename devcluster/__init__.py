"""devcluster: an embedded stand-in for Kubernetes, for laptops and integration tests."""

# The version the API server reports; kubectl's dispatcher picks its binary by it.
DEFAULT_KUBERNETES_VERSION = "v1.33.0"
