"""pairx.viz."""
