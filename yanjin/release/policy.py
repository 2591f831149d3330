"""Release settings read from the profile (sections `rollout`, `release` and `costs`); the config schema owns them."""
from ..config import CostParams, ReleasePolicy, RolloutPolicy

__all__ = ["CostParams", "ReleasePolicy", "RolloutPolicy"]
