"""Internals of the synthetic patterned-individual benchmark (public API: pairx.data.synthetic)."""
