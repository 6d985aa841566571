"""pairx.training."""
