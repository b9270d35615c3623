"""Datasets, the encoder zoo, latents and classifier heads, built once and cached."""
