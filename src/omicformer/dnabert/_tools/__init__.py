"""Implementations behind :mod:`omicformer.dnabert.tl` (one public function per module)."""
