"""The configuration: conf/ composed into params.yaml, its schema, and the objects built from it."""
