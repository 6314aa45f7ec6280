"""Pure reconciliation: desired state vs observed children -> actions and status."""
