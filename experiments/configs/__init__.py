"""Experiment configs: Python files returning a ConfigDict from get_config(arg)."""
