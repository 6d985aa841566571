"""pairx.explainers."""
