"""Attention layers and kernels of the MixedAE models."""
