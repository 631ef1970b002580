"""User-facing model class: fit / predict / save / load."""

from bayesfuse.model.fusion_model import FusionModel

__all__ = ["FusionModel"]
