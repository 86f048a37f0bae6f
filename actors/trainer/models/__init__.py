"""The trainer's model package: importing it registers every model (actors.trainer.registry imports it
the first time a model name is looked up)."""
from actors.trainer.eqprop import model as _eqprop_model  # noqa: F401  (registers "eqprop_mlp", "eqprop_bp")
from actors.trainer.models import neurofmx  # noqa: F401  (registers "neurofmx")
