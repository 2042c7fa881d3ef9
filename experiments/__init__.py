"""Launch scripts, configs and notebooks (run from a checkout)."""
