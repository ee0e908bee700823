"""The networks: backbones, PIRL heads, memory bank, losses, the PIRL model, BN statistics."""
