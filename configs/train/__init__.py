"""Trainer presets: configs/train/<model>.yaml (jobs.train, TrainSpec) and search_*.yaml (jobs.tune_neurofmx)."""
