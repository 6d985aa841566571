"""The paper's evaluation protocol: configuration, pairs, layer choice, runs and their rows."""
