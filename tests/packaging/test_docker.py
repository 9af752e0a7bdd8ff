"""Static checks of the container files (no Docker engine runs on CI machines)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_copies_only_files_that_exist():
    copies = [rest for keyword, rest in _instructions(REPO / "Dockerfile") if keyword == "COPY"]
    assert copies
    for rest in copies:
        *sources, _ = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repo"


def test_dockerfile_has_gpu_and_cpu_targets_non_root_and_readiness_healthcheck():
    rows = _instructions(REPO / "Dockerfile")
    stages = [rest.split()[-1] for keyword, rest in rows if keyword == "FROM"]
    assert stages == ["cpu", "gpu"]  # gpu last: the default target
    users = [rest for keyword, rest in rows if keyword == "USER"]
    assert len(users) == 2 and all(u not in ("root", "0") for u in users)
    checks = [rest for keyword, rest in rows if keyword == "HEALTHCHECK"]
    assert len(checks) == 2 and all("dat-healthcheck" in c for c in checks)
    assert "/health/ready" in (REPO / "docker/healthcheck.py").read_text()
    cmds = [rest for keyword, rest in rows if keyword == "CMD"]
    assert cmds == ['["python", "-m", "service"]'] * 2
    assert (REPO / "service/__main__.py").is_file()


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # the dev extra installs it there
    return shutil.which("hadolint") or (str(beside_python) if beside_python.is_file() else None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (dev extra, x86-64 Linux)")
def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_exports_engines_once_then_serves_them_on_the_gpu():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    export, server, prometheus = services["export"], services["server"], services["prometheus"]
    assert export["restart"] == "no"
    assert server["depends_on"]["export"]["condition"] == "service_completed_successfully"
    for service in (export, server):
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        assert "engines:/artifacts" in " ".join(service["volumes"])
        assert any(v.endswith(":/checkpoints:ro") for v in service["volumes"])
    assert "engines" in compose["volumes"]
    assert server["healthcheck"]["test"][-1] == "/usr/local/bin/dat-healthcheck"
    assert server["restart"] == "unless-stopped"
    assert all(key.startswith("DAT_") for key in server["environment"])
    assert export["command"][-1] == "/app/docker/export.sh"
    assert (REPO / "docker/export.sh").is_file()
    assert prometheus["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((REPO / "docker/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["server:8000"]


def test_export_entrypoint_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO / "docker/export.sh")], check=True)


def test_compose_sets_only_settings_the_server_knows():
    from service.settings import Settings

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    fields = {f"DAT_{name.upper()}" for name in Settings.model_fields}
    unknown = set(compose["services"]["server"]["environment"]) - fields
    assert not unknown, f"compose sets variables the server ignores: {sorted(unknown)}"


def _stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in _instructions(dockerfile):
        if keyword == "FROM":
            current = stages.setdefault(rest.split()[-1], [])
        current.append((keyword, rest))
    return stages


def _requirement_names(requirements) -> set[str]:
    from packaging.requirements import Requirement

    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def _pip_installs(stage: list[tuple[str, str]]) -> set[str]:
    """The distributions a stage's pip installs bring in by name: named requirements, and the
    project's own dependencies plus the extras asked for (``.``, ``.[cpu]``)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    for keyword, rest in stage:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|", rest):
            words = command.split()
            if "pip" not in words or "install" not in words:
                continue
            args = words[words.index("install") + 1 :]
            skip = False
            for word in args:
                if skip or word.startswith("-"):
                    skip = word in ("-c", "-r", "--constraint", "--index-url", "--extra-index-url")
                    continue
                word = word.strip("'\"")
                if word == "." or word.startswith(".["):
                    names |= _requirement_names(project["dependencies"])
                    extras = word[2:-1].split(",") if word.startswith(".[") else []
                    for extra in extras:
                        names |= _requirement_names(project["optional-dependencies"][extra])
                else:
                    names |= _requirement_names([word])
    return names


def test_each_image_installs_exactly_one_onnxruntime():
    """onnxruntime and onnxruntime-gpu install the same package folder and overwrite each
    other's files: the CPU image gets the first, the GPU image the second, never both."""
    stages = _stages(REPO / "Dockerfile")
    runtimes = {
        name: {d for d in _pip_installs(stage) if d.startswith("onnxruntime")}
        for name, stage in stages.items()
    }
    assert runtimes == {"cpu": {"onnxruntime"}, "gpu": {"onnxruntime-gpu"}}


def test_onnxruntime_is_an_extra_and_the_cpu_venv_installs_it():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not {d for d in _requirement_names(project["dependencies"]) if d.startswith("onnxruntime")}
    extras = {name: _requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    assert "onnxruntime" in extras["cpu"] and "onnxruntime-gpu" not in extras["cpu"]
    assert "onnxruntime-gpu" in extras["gpu"] and "onnxruntime" not in extras["gpu"]
    # `make test` on a clean clone (CI's .ci/run) builds the venv with the CPU runtime and dev tools
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^EXTRAS \?= dev,cpu$", makefile, re.M)
    assert "EXTRAS=$(EXTRAS)" in makefile
    assert "EXTRAS=${EXTRAS:-dev,cpu}" in (REPO / "scripts/setup-venv.sh").read_text()


def test_the_export_step_verifies_a_detector_on_pictures(tmp_path):
    """docker/export.sh: the default detector on the image's sample scenes, another on the files
    of DAT_EXPORT_VERIFY_IMAGES (globs expanded)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "python").chmod(0o755)
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"")

    def run(**env) -> list[str]:
        calls.unlink(missing_ok=True)
        subprocess.run(
            ["bash", str(REPO / "docker/export.sh")],
            check=True,
            timeout=30,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        )
        return calls.read_text().splitlines()

    classifier, detector = run()
    assert "--verify-images" not in classifier  # a classifier verifies on seeded random inputs
    assert detector.endswith("--verify-images /app/samples/scene_*.png")  # the image's copy of samples/
    assert (REPO / "samples").is_dir() and sorted((REPO / "samples").glob("scene_*.png"))
    _, detector = run(
        DAT_DETECTOR="dat_tiny_retinanet",
        DAT_DETECTOR_CHECKPOINT="/checkpoints/rtn.pth",
        DAT_EXPORT_VERIFY_IMAGES=f"{tmp_path}/*.png {tmp_path}/b.jpg",
    )
    assert detector.endswith(
        f"--checkpoint /checkpoints/rtn.pth --verify-images {tmp_path}/a.png {tmp_path}/b.jpg"
    )
    _, detector = run(DAT_DETECTOR="dat_tiny_retinanet")
    assert "--verify-images" not in detector  # the export itself then refuses, naming the option


def test_the_images_hold_the_server_but_not_the_training_code():
    """training/ (the demo models' data, training loops and CLIs) stays out of both images, and
    so does its train extra; the packages the server imports go in."""
    for name, stage in _stages(REPO / "Dockerfile").items():
        sources = {
            source.rstrip("/")
            for keyword, rest in stage
            if keyword == "COPY"
            for source in rest.split()[:-1]
            if not source.startswith("--")
        }
        assert {"models", "export", "service"} <= sources, name
        assert not {s for s in sources if s in (".", "training") or s.startswith("training/")}, name
        assert "scikit-learn" not in _pip_installs(stage), name
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "scikit-learn" in _requirement_names(project["project"]["optional-dependencies"]["train"])
    assert "training*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
