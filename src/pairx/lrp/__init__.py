"""Layer-wise relevance propagation for re-identification models: rules, canonizers, engines."""
