"""Pure builders: manifests (plain dicts) from the typed API objects. No API calls."""
