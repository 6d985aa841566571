"""Command-line interface: ``pairx <command>``."""
