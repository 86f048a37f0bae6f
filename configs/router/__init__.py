"""router presets (YAML package data; see configs/__init__.py)."""
