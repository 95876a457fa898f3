"""kubeconform, and the Kubernetes JSON schemas it validates against, with no internet.

    python tests/support/kubeconform.py install      # prints the binary's path
    python tests/support/kubeconform.py validate deploy/k8s

The binary is looked for as livekit-server is: `$KUBECONFORM_BIN`, `kubeconform` on PATH, the
project-local cache (`.cache/kubeconform/<version>/`); `install` builds the pinned release from its
Go module into that cache when none is found (needs Go; about 10 s of compiling).

kubeconform downloads its schemas from GitHub by default. Here they come from PyPI instead: the
kubernetes-validate package (a dev dependency) ships the Kubernetes JSON schemas of every recent
release. Its files point at one shared `_definitions.json` by an absolute URL
(`https://kubernetes.io/api/...`) that kubeconform would try to fetch, so they are copied once into
the cache with those references made relative to the file, which kubeconform resolves on disk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from handler.fakes.go_tools import GoTool, ToolNotFound, cache_root

VERSION = "v0.8.0"
MODULE = "github.com/yannh/kubeconform/cmd/kubeconform"
KUBERNETES = "1.34.0"
"""The Kubernetes release the manifests are checked against (one the schema package ships)."""
BIN_VAR = "KUBECONFORM_BIN"
INSTALL_COMMAND = "python tests/support/kubeconform.py install"
SCHEMA_PACKAGE = "kubernetes_validate"


KUBECONFORM = GoTool("kubeconform", MODULE, VERSION, BIN_VAR, INSTALL_COMMAND)
NotInstalled = ToolNotFound
"""No kubeconform binary or no schemas, and none can be had here; the message says how."""


def find() -> Path | None:
    """The binary to use, or None."""
    return KUBECONFORM.find()


def install() -> Path:
    """The binary's path, building the pinned release into the cache if none is found."""
    return KUBECONFORM.install()


def schemas() -> Path:
    """The directory holding `v<KUBERNETES>-standalone-strict/`, made from the schema package once."""
    spec = importlib.util.find_spec(SCHEMA_PACKAGE)  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise NotInstalled("the Kubernetes schemas come from kubernetes-validate: pip install -e '.[dev]'")
    package = f"kubernetes-validate-{metadata.version(SCHEMA_PACKAGE)}"
    out = cache_root() / "kubernetes-json-schema" / package
    done = out / f"v{KUBERNETES}-standalone-strict"
    if (done / "_definitions.json").is_file():
        return out
    shipped = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"
    source = shipped / f"v{KUBERNETES}-local-strict"
    if not source.is_dir():
        raise NotInstalled(f"{package} ships no schemas for Kubernetes {KUBERNETES} ({source})")
    # per process: test workers running side by side may both get here
    partial = done.with_name(f"{done.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for f in source.glob("*.json"):
        text = f.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
        schema = json.loads(text)
        schema.pop("$id", None)  # an https base URL: the relative references would be fetched from it
        (partial / f.name).write_text(json.dumps(schema))
    try:
        partial.rename(done)  # whole or absent: a run cut short leaves only the .partial
    except OSError:  # another process finished first: its copy is the same
        shutil.rmtree(partial, ignore_errors=True)
    return out


def validate(*paths: Path | str) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict over `paths`; every resource must find its schema (none is skipped)."""
    location = str(schemas()) + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
    location += "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    command = [str(install()), "-strict", "-summary", "-kubernetes-version", KUBERNETES]
    command += ["-schema-location", location, *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args == ["install"]:
            print(install())
            print(schemas())
            return 0
        if args[:1] == ["validate"] and args[1:]:
            done = validate(*args[1:])
            print(done.stdout + done.stderr, end="")
            return done.returncode
    except NotInstalled as e:
        print(f"kubeconform: {e}", file=sys.stderr)
        return 1
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
