"""The procedure's later steps built on the tenant's resources: verify, rotate the secret, tear down,
and diagnose a failed run."""
