"""MixedAE."""
