"""devcluster: an embedded stand-in for Kubernetes, for laptops and integration tests."""
