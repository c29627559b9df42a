"""Shared plumbing for omicformer models (devices, AnnData access, I/O, training)."""
