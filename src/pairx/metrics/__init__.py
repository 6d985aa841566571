"""pairx.metrics."""
