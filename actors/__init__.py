"""Subsystems: each owns an engine (no Ray), an actor that wraps it, a pool and a config."""
