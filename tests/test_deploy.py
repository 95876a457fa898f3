"""Installed, not only checked out; and deployed.

- A wheel built from the image's build context (the checkout less `.dockerignore`) is installed,
  not editable, into a fresh virtualenv and run from empty directories: the shipped defaults
  apply; a directory's own settings.toml, environments/, .env and .secrets.toml layer over them; a
  user's own `plugins` package is left alone. Its dependencies come from this interpreter's
  site-packages through a .pth file (installing them from an index takes minutes and a network),
  so only voice-handler itself is installed: the part this checks.
- The image (no container engine here): the Dockerfile's invariants, and its entrypoint and
  HEALTHCHECK run in that install against a real livekit-server.
- The Kubernetes manifests: kubeconform against the Kubernetes schema, and their invariants
  against the production settings the pod runs with.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PLANTED, REPO
from support import kubeconform

from handler import config
from handler.fakes.livekit_server import LiveKitServer, free_port
from handler.fakes.worker_process import clean_env, settings_env

DOCKERFILE = REPO / "deploy" / "Dockerfile"
PROVIDER_KEYS = {k: v for k, v in PLANTED.items() if not k.startswith("LIVEKIT_")}
MANIFESTS = REPO / "deploy" / "k8s"


# ------------------------------------------------------------------------------ the Dockerfile


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final build stage, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    steps = [line.strip().split(None, 1) for line in joined.splitlines()]
    steps = [s for s in steps if s and not s[0].startswith("#")]
    last_from = max(i for i, s in enumerate(steps) if s[0].upper() == "FROM")
    return [(s[0].upper(), s[1] if len(s) > 1 else "") for s in steps[last_from:]]


def image_env() -> dict[str, str]:
    """The final stage's ENV (KEY=value pairs), PATH aside."""
    env: dict[str, str] = {}
    for op, args in instructions(DOCKERFILE.read_text()):
        if op == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(args))  # type: ignore[misc]
    env.pop("PATH", None)
    return env


def exec_form(op: str) -> list[str]:
    (args,) = [a for o, a in instructions(DOCKERFILE.read_text()) if o == op]
    args = args.split("CMD", 1)[1] if op == "HEALTHCHECK" else args
    return list(json.loads(args))


def production_as_deployed(root: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> config.Settings:
    """The settings a container runs with: production, the image's ENV, then `env`."""
    for name, value in {**image_env(), **env}.items():
        monkeypatch.setenv(name, value)
    return config.load(root=root)


def test_the_image_is_slim_non_root_and_installs_the_project_not_editable() -> None:
    text = DOCKERFILE.read_text()
    final = instructions(text)
    assert "slim" in text.split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
    (user,) = [a for o, a in final if o == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    installs = [line for line in text.replace("\\\n", " ").splitlines() if "pip install" in line]
    assert installs and all(" -e " not in f" {line} " and "--editable" not in line for line in installs)
    assert any(re.search(r"pip install --no-cache-dir \.(\s|$)", line) for line in installs)
    assert "silero.VAD.load()" in text  # the model is loaded (so present) at build time
    assert exec_form("ENTRYPOINT") == ["python", "-m", "handler", "start"]
    assert exec_form("HEALTHCHECK") == ["python", "-m", "handler", "health"]


def test_the_image_exposes_the_ports_its_settings_use(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = production_as_deployed(root, monkeypatch)
    assert settings.env == "production"
    (exposed,) = [a.split() for o, a in instructions(DOCKERFILE.read_text()) if o == "EXPOSE"]
    ports = {settings.get("worker.port"), settings.get("worker.prometheus_port")}
    assert 0 not in ports and {int(p) for p in exposed} == ports


# ------------------------------------------------------------------------------ the install


def build_context(dest: Path) -> Path:
    """The checkout as `docker build` sends it: less what .dockerignore lists (its `**/name`
    patterns match a name at any depth)."""
    patterns = [
        line.strip().removeprefix("**/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignore(_: str, names: list[str]) -> set[str]:
        return {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)}

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv holding the wheel built from the image's build context."""
    tmp = tmp_path_factory.mktemp("installed")
    src = build_context(tmp / "src")
    assert not (src / "tests").exists() and (src / "handler" / "defaults" / "settings.toml").is_file()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src))
    (wheel,) = (tmp / "dist").glob("voice_handler-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv"))
    python = tmp / "venv" / "bin" / "python"
    purelib = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert sysconfig.get_paths()["purelib"] in deps
    (purelib / "_dependencies.pth").write_text("\n".join(deps) + "\n")
    run(*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    return python


def run(*command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout.strip()


def handler_cli(python: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "handler", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(**env),
        timeout=120,
    )


def test_the_installed_package_runs_from_an_empty_directory_on_its_shipped_defaults(
    installed: Path, tmp_path: Path
) -> None:
    where = run(
        str(installed),
        "-c",
        "import handler, handler_plugins; print(handler.__file__, handler_plugins.__file__)",
        cwd=tmp_path,
    )
    venv = installed.parent.parent
    assert all(Path(p).is_relative_to(venv) for p in where.split()), where

    shown = handler_cli(installed, tmp_path, "config", "show", "--json", "--env", "production")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["root"] == str(tmp_path)
    assert doc["settings"]["logging.level"] == {"value": "WARNING", "source": "environments/production.toml"}
    assert doc["settings"]["turn.max_endpointing_delay"]["source"] == config.DEFAULT_SOURCE

    checked = handler_cli(installed, tmp_path, "config", "check", "--env", "dev")
    assert checked.returncode == 0, checked.stderr


def test_a_directorys_own_files_layer_over_the_shipped_defaults_and_its_plugins_package_is_left_alone(
    installed: Path, tmp_path: Path
) -> None:
    (tmp_path / "settings.toml").write_text("[default.llm]\ntemperature = 0.1\n")
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "production.toml").write_text("[production.worker]\ndrain_timeout = 900\n")
    (tmp_path / "environments" / "staging.toml").write_text('[staging.logging]\nlevel = "ERROR"\n')
    (tmp_path / ".env").write_text(f"MAX_TOKENS=123\nOPENAI_API_KEY={PLANTED['OPENAI_API_KEY']}\n")
    (tmp_path / ".secrets.toml").write_text(f'ELEVEN_API_KEY = "{PLANTED["ELEVEN_API_KEY"]}"\n')
    # a user's own top-level `plugins` package, first on sys.path when run from here
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "__init__.py").write_text(
        "raise ImportError('the user\\'s own plugins package')\n"
    )

    shown = handler_cli(installed, tmp_path, "config", "show", "--json", "--env", "production")
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)["settings"]
    assert values["llm.temperature"] == {"value": 0.1, "source": f"{tmp_path}/settings.toml [default]"}
    assert values["worker.drain_timeout"] == {
        "value": 900,
        "source": f"{tmp_path}/environments/production.toml",
    }
    assert values["logging.level"]["value"] == "WARNING"  # the shipped production.toml still applies
    assert values["llm.max_tokens"] == {"value": 123, "source": ".env (MAX_TOKENS)"}
    secrets = json.loads(shown.stdout)["secrets"]
    assert (secrets["OPENAI_API_KEY"]["source"], secrets["ELEVEN_API_KEY"]["source"]) == (
        ".env",
        ".secrets.toml",
    )
    assert not any(v in shown.stdout + shown.stderr for v in PLANTED.values())

    staging = handler_cli(installed, tmp_path, "config", "show", "--json", "--env", "staging")
    assert json.loads(staging.stdout)["settings"]["logging.level"]["value"] == "ERROR", staging.stderr

    listed = handler_cli(installed, tmp_path, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    built_in = {p["name"] for p in json.loads(listed.stdout)["plugins"] if p["origin"] == "built-in"}
    assert {"silero_vad", "local_stt", "metrics"} <= built_in


# ------------------------------------------------------------------------------ the image's entrypoint


def test_the_entrypoint_without_livekit_credentials_says_so_in_one_message(
    installed: Path, tmp_path: Path
) -> None:
    _, *args = exec_form("ENTRYPOINT")
    done = subprocess.run(
        [str(installed), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(**image_env(), **PROVIDER_KEYS),
        timeout=120,
    )
    assert done.returncode == 2 and "LIVEKIT_URL" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def image_worker(
    installed: Path, tmp_path: Path, real_livekit: LiveKitServer
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """The image's entrypoint, in the install, with the image's ENV (its ports moved to free ones:
    tests run side by side), registered with a real livekit-server."""
    ports = {"worker.port": free_port(), "worker.prometheus_port": free_port()}
    ports["worker.num_idle_processes"] = 0
    env = clean_env(**{**image_env(), **PROVIDER_KEYS, **real_livekit.env(), **settings_env(ports)})
    _, *args = exec_form("ENTRYPOINT")
    log = (tmp_path / "worker.err").open("wb")
    proc = subprocess.Popen([str(installed), *args], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_the_entrypoint_runs_the_worker_its_healthcheck_passes_and_sigterm_ends_it(
    installed: Path, tmp_path: Path, image_worker: tuple[subprocess.Popen[bytes], dict[str, str]]
) -> None:
    proc, env = image_worker
    _, *check = exec_form("HEALTHCHECK")
    deadline = time.monotonic() + 60
    while True:
        probe = subprocess.run(
            [str(installed), *check], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30
        )
        if probe.returncode == 0 or proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    log = (tmp_path / "worker.err").read_text(errors="replace")
    assert probe.returncode == 0, probe.stderr + log[-3000:]
    assert probe.stdout.startswith("healthy")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log[-3000:]
    down = subprocess.run(
        [str(installed), *check], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30
    )
    assert down.returncode == 1 and down.stdout == ""


# ------------------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="module")
def validator() -> None:
    """kubeconform and its schemas, as `nox` installs them; skipped without (failed under CI)."""
    try:
        found = kubeconform.find()
        if found is None or not found.is_file():
            raise kubeconform.NotInstalled(f"not found ({found}): run `{kubeconform.INSTALL_COMMAND}`")
        kubeconform.schemas()
    except kubeconform.NotInstalled as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))  # CI installs it: its absence is a broken set-up, not a skip
        pytest.skip(str(e))


def test_the_manifests_are_valid_kubernetes(validator: None) -> None:
    done = kubeconform.validate(MANIFESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid: 2, Invalid: 0, Errors: 0, Skipped: 0" in done.stdout


def test_kubeconform_refuses_an_unknown_field_and_a_wrong_type(validator: None, tmp_path: Path) -> None:
    deployment = manifest("Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60  # ...Seconds
    deployment["spec"]["replicas"] = "two"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(deployment))
    done = kubeconform.validate(tmp_path / "bad.yaml")
    assert done.returncode == 1 and "Invalid: 1" in done.stdout
    assert "terminationGracePeriod" in done.stdout and "replicas" in done.stdout


def manifest(kind: str) -> dict[str, Any]:
    docs = [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_deployment_drains_probes_and_exposes_what_the_settings_say(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = manifest("Deployment")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = production_as_deployed(
        root, monkeypatch, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    )
    assert pod["spec"]["terminationGracePeriodSeconds"] >= settings.get("worker.drain_timeout") >= 600
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": settings.get("worker.port"), "metrics": settings.get("worker.prometheus_port")}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "health"}
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == settings.get("worker.prometheus_port")
    (user,) = [a for o, a in instructions(DOCKERFILE.read_text()) if o == "USER"]
    assert pod["spec"]["securityContext"]["runAsUser"] == int(user.split(":")[0])


def test_the_autoscaler_adds_pods_before_the_workers_refuse_calls(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, hpa = manifest("Deployment"), manifest("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    (target,) = [m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]]
    threshold = production_as_deployed(root, monkeypatch).get("worker.load_threshold")
    # livekit's load is CPU use over the CPU limit: a worker takes calls up to threshold x limit,
    # while the autoscaler aims at target% of the request; the second must come first
    scale_out_at = cores(resources["requests"]["cpu"]) * target / 100
    assert scale_out_at < threshold * cores(resources["limits"]["cpu"])
