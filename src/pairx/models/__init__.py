"""pairx.models."""
