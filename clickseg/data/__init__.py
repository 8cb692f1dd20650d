"""Training data: shards -> crops with simulated clicks, split across ranks and workers."""
