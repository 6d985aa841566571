"""Shared infrastructure: errors, optional imports, result types, base classes."""
