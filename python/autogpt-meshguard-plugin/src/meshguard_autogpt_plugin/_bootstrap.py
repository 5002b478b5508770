"""Makes the packages bundled in the plugin zip importable when they are not installed.

AutoGPT imports the plugin package straight from the zip (``zipimporter``) without putting the zip
on ``sys.path``; the zip also carries ``meshguard`` and ``meshguard_autogpt``, which the plugin
imports by their absolute names. Installed copies win: the zip is appended, never prepended.
"""

import importlib.util
import sys


def make_dependencies_importable() -> None:
    """Appends this plugin's zip to ``sys.path`` when the SDK is not installed."""
    if importlib.util.find_spec("meshguard") and importlib.util.find_spec("meshguard_autogpt"):
        return
    archive = getattr(__spec__.loader, "archive", None)  # set by zipimporter only
    if archive and archive not in sys.path:
        sys.path.append(archive)
