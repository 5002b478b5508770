"""``meshguard-autogpt-plugin build-zip DIR``: writes the plugin zip AutoGPT loads.

AutoGPT (0.2.x) loads every ``*.zip`` directly in its plugins folder and imports the first package
of the zip that has an ``__init__.py``; the zip therefore starts with ``meshguard_autogpt_plugin/``
and then carries the packages it imports, so that it works even where they are not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence

ZIP_NAME = "meshguard-autogpt-plugin.zip"
# The plugin package first: AutoGPT takes the first __init__.py it finds in the zip.
BUNDLED_PACKAGES = ("meshguard_autogpt_plugin", "meshguard_autogpt", "meshguard")


def _package_dir(name: str) -> Path:
    # Found, not imported: importing the plugin package needs AutoGPT's plugin template, which
    # the machine that builds the zip need not have.
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name} has no files to bundle")
    return Path(spec.origin).resolve().parent


def _package_files(name: str) -> List[Path]:
    root = _package_dir(name)
    files = [
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed")
    ]
    init = root / "__init__.py"
    # __init__.py leads each package so that the zip's first entry is the plugin's.
    return [init, *sorted(path for path in files if path != init)]


def build_zip(plugins_dir: Path) -> Path:
    """Writes ``meshguard-autogpt-plugin.zip`` into ``plugins_dir`` and returns its path."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    target = plugins_dir / ZIP_NAME
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for package in BUNDLED_PACKAGES:
            root = _package_dir(package)
            for path in _package_files(package):
                archive.write(path, f"{package}/{path.relative_to(root).as_posix()}")
    # AutoGPT globs *.zip: the name changes only once the file is complete.
    partial.replace(target)
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="meshguard-autogpt-plugin",
        description="Tools for the MeshGuard plugin of classic AutoGPT.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build-zip", help="write the plugin zip into AutoGPT's plugins folder"
    )
    build.add_argument("plugins_dir", metavar="DIR", type=Path, help="AutoGPT's plugins folder")
    args = parser.parse_args(argv)
    target = build_zip(args.plugins_dir)
    print(f"wrote {target}")
    print("then set in AutoGPT's .env: ALLOWLISTED_PLUGINS=MeshGuardPlugin")
    print("                            MESHGUARD_URL=...  MESHGUARD_TOKEN=...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
