"""Evaluation on the test set: metrics, PCA baseline, probes."""
