"""Training data: shards -> samples by SegNext's recipe (whole-image augmentation, root targets,
its click sampler), split across ranks and workers."""
