"""Where things run: settings, connecting to Ray, the local services of the embedded default.

Imports none of Handoff's other packages.
"""

from cluster.settings import Settings

__all__ = ["Settings"]
