"""Orchestration on top of the clickseg library: sweeps, Slurm/local jobs, status and reports."""
