"""Training half of Handoff: data, models, Ray Tune search, MLflow tracking and registry.

The public registry API (used by serving, monitoring and the CLI) is exported here; importing
this package starts nothing and imports neither Ray nor torch.
"""

from training.registry import CHALLENGER, CHAMPION, Registry, RegistryError, VersionInfo, alias_for_new_version

__all__ = ["CHALLENGER", "CHAMPION", "Registry", "RegistryError", "VersionInfo", "alias_for_new_version"]
