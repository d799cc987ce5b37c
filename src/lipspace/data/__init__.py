"""Dataset directories: schema, loading, ray sampling, the synthetic talking head."""
