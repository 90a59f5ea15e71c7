"""Running the notebooks: ``runbook run``'s kernel runner, batches over many tenants, the demos, and fleet
health with its report."""
