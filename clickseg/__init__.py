"""clickseg: click-based interactive segmentation (SegNext-style) from shards to Slurm sweeps."""
