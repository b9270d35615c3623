"""Hydra's plugin package for the project's sweep launcher (Hydra finds launchers only here)."""
