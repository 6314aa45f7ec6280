"""Unit tests of devcluster's pure modules (selectors, patches, CRD schemas)."""
