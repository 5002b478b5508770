"""MeshGuard plugin for classic AutoGPT, loaded from the zip in AutoGPT's ``plugins/`` folder.

AutoGPT instantiates every attribute of this module that looks like an abstract class, so this
module exposes the plugin class and nothing else of that kind.
"""

from ._bootstrap import make_dependencies_importable

make_dependencies_importable()

from .plugin import MeshGuardPlugin  # noqa: E402 - needs the bootstrap above

__all__ = ["MeshGuardPlugin"]
