"""PIRL pretraining: `fit.train`, the run folder, writing the encoder, checkpoints, strategies."""
