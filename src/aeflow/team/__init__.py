"""The team stack: PostgreSQL, an S3 object store and an MLflow server on one machine (`aeflow team`)."""
