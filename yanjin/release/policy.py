"""Release settings read from the profile (sections `rollout` and `costs`); the config schema owns them."""
from ..config import CostParams, RolloutPolicy

__all__ = ["CostParams", "RolloutPolicy"]
