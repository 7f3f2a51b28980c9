"""Backends: how a header reaches the kernel (or a file standing in for it)."""
