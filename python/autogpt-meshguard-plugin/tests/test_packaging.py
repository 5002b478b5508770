"""Both distributions build wheels with their PEP 517 backend and ship what users import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway_process import REPO_ROOT, AgentIdentity, Gateway


def copy_of(project: str, destination: Path) -> Path:
    """A copy of ``python/<project>``: setuptools stages files in build/, which must not collect
    in the source tree."""
    shutil.copytree(
        REPO_ROOT / "python" / project,
        destination,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"),
    )
    return destination


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
    source = copy_of(project, tmp_path / "source")
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
            assert "meshguard-autogpt-plugin = meshguard_autogpt.plugin_zip:main" in text


def test_wheels_and_sdists_install_into_a_clean_virtualenv_and_govern(
    tmp_path: Path, shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    # Each distribution builds a wheel and an sdist (PEP 517, as `python -m build` does for a
    # release) ...
    dist = tmp_path / "dist"
    for project in ("meshguard", "autogpt-meshguard-plugin"):
        source = copy_of(project, tmp_path / project)
        built = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel"]
            + ["--outdir", str(dist), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert built.returncode == 0, built.stdout + built.stderr
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    sdists = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert [w.split("-")[0] for w in wheels] == ["autogpt_meshguard_plugin", "meshguard"], wheels
    assert [s.rsplit("-", 1)[0] for s in sdists] == ["autogpt_meshguard_plugin", "meshguard"], (
        sdists
    )

    # ... that installs from the wheels into a virtualenv holding nothing else (its dependencies
    # from the index, at the versions AutoGPT pins) ...
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clean)], check=True)
    python = clean / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + [
            "--disable-pip-version-check",
            "-c",
            str(REPO_ROOT / "python" / "requirements-autogpt.txt"),
        ]
        + [str(dist / w) for w in wheels],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # ... and governs: a check through the installed SDK, from outside the source tree.
    smoke = (
        "import json, meshguard\n"
        "client = meshguard.MeshGuardClient()\n"
        "allowed = client.check('read:workspace', 'workspace/notes.txt')\n"
        "denied = client.check('execute:shell', 'rm -rf /')\n"
        "print(json.dumps({'module': meshguard.__file__, 'allowed': allowed.allowed,"
        " 'denied': denied.allowed, 'code': denied.code}))\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MESHGUARD_URL": shared_gateway.url,
        "MESHGUARD_TOKEN": agent.token,
    }
    ran = subprocess.run(
        [str(python), "-c", smoke],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    answer = json.loads(ran.stdout)
    assert answer["module"].startswith(str(clean)), answer
    assert answer == {**answer, "allowed": True, "denied": False, "code": "denied_by_rule"}
    tool = subprocess.run(
        [str(clean / "bin" / "meshguard-autogpt-plugin"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert tool.returncode == 0 and "build-zip" in tool.stdout, tool.stdout + tool.stderr
