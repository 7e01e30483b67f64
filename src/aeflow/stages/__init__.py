"""Thin DVC stage entry points: read params.yaml, call a pure function, write outputs."""
