"""Thin kopf handlers, one module per resource: read, call the pure core, apply."""
