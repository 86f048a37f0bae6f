"""LLM engine presets (actors.llm.config.EngineSpec): `serve run serve.llm:build_app models=[tiny.yaml]`."""
