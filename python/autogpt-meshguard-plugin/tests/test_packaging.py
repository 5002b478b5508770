"""Both distributions build wheels with their PEP 517 backend and ship what users import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway_process import REPO_ROOT


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("meshguard", {"meshguard/__init__.py", "meshguard/py.typed", "meshguard/langchain.py"}),
        (
            "autogpt-meshguard-plugin",
            {
                "meshguard_autogpt/__init__.py",
                "meshguard_autogpt/__main__.py",
                "meshguard_autogpt/py.typed",
                "meshguard_autogpt_plugin/__init__.py",
                "meshguard_autogpt_plugin/plugin.py",
            },
        ),
    ],
)
def test_wheel_builds_with_the_pep517_backend(tmp_path: Path, project: str, expected: set) -> None:
    # a copy: setuptools stages files in build/, which must not collect in the source tree
    source = tmp_path / "source"
    shutil.copytree(
        REPO_ROOT / "python" / project,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"),
    )
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as opened:
        names = set(opened.namelist())
        assert expected <= names
        if project == "autogpt-meshguard-plugin":
            entry_points = next(n for n in names if n.endswith("entry_points.txt"))
            text = opened.read(entry_points).decode()
            assert "meshguard-autogpt-plugin = meshguard_autogpt_plugin.build:main" in text
