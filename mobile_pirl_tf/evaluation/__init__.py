"""Evaluating frozen encoders: features, probes, baselines, fine-tuning, the kNN monitor."""
