"""livekit's private names are reached in one module (handler/livekit_compat.py), against the
releases it was checked with: a newer livekit-agents fails here with the list of touch points, and
so does a private name reached from anywhere else."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from functools import cache
from pathlib import Path

import livekit
import livekit.agents

from handler import livekit_compat
from handler.pipeline import reconnect

ROOT = Path(__file__).resolve().parent.parent
OURS = [p for d in ("handler", "handler_plugins") for p in sorted((ROOT / d).rglob("*.py"))]
COMPAT = ROOT / "handler" / "livekit_compat.py"
NOT_LIVEKIT = {
    "_handle": "ctypes.CDLL's handle of espeak-ng's library (handler_plugins/engines/espeak_tts.py)",
}
"""Names that livekit also uses but that these modules reach on other libraries' objects."""


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@cache
def livekit_private_names() -> frozenset[str]:
    """Underscore names livekit's own sources define (methods, and attributes they assign), less
    the abstract methods a provider implements."""
    names: set[str] = set()
    abstract: set[str] = set()
    roots = {Path(p) for p in livekit.__path__} | {Path(p) for p in livekit.agents.__path__}
    for root in roots:
        for path in root.rglob("*.py"):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and private(node.name):
                    names.add(node.name)
                    if any(ast.unparse(d).endswith("abstractmethod") for d in node.decorator_list):
                        abstract.add(node.name)
                elif (
                    isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and private(node.attr)
                ):
                    names.add(node.attr)
    return frozenset(names - abstract)


def our_private_names() -> set[str]:
    """Underscore names our own code defines (methods and attributes): reading those is reading
    ours, even where livekit has a name alike. Overriding a livekit method is found apart."""
    names: set[str] = set()
    for path in OURS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and private(node.attr):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and private(node.name):
                names.add(node.name)
    return names


def touches(path: Path, lk: frozenset[str], ours: set[str]) -> list[str]:
    """Where one module reaches a private livekit name: a private module imported, a private
    attribute read or written (also through getattr), a private method overridden."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("livekit"):
            parts = [*node.module.split("."), *(a.name for a in node.names)]
            if any(private(part) for part in parts):
                found.append(f"{where}:{node.lineno}: imports from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in lk and node.attr not in ours:
            if node.attr not in NOT_LIVEKIT:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in lk
            and node.args[1].value not in ours
        ):
            found.append(f"{where}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ClassDef):
            methods = [i for i in node.body if isinstance(i, ast.FunctionDef | ast.AsyncFunctionDef)]
            for item in methods:
                if item.name in lk and overrides_livekit(path, node.name, item.name):
                    found.append(f"{where}:{item.lineno}: overrides {node.name}.{item.name}")
    return found


def overrides_livekit(path: Path, cls: str, method: str) -> bool:
    """Whether the class's bases, as imported, are livekit classes that define `method`."""
    module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    import importlib

    module = importlib.import_module(module_name)
    for obj in vars(module).values():
        if inspect.isclass(obj) and obj.__name__ == cls:
            return any(
                base.__module__.startswith("livekit") and method in vars(base) for base in obj.__mro__[1:]
            )
    return True  # a class built inside a function: counted, since its bases cannot be checked


def test_the_installed_livekit_agents_is_one_the_touch_points_were_checked_against() -> None:
    assert livekit_compat.problems() == []


def test_a_release_outside_the_checked_range_lists_every_touch_point() -> None:
    lines = livekit_compat.problems("1.9.0")
    assert "1.9.0 is outside the checked range >=1.8.9,<1.9" in lines[0]
    assert len(lines) == 1 + len(livekit_compat.TOUCH_POINTS) + 1 + len(livekit_compat.BEHAVIOUR)
    assert any("_run_worker" in line for line in lines)
    assert livekit_compat.problems("1.8.8") != []
    assert livekit_compat.problems("1.8.10") == []


def origin(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def test_the_livekit_behaviour_we_rely_on_is_still_in_the_installed_release() -> None:
    """The texts and the schedule in livekit_compat.BEHAVIOUR, read from the installed sources and
    the native library: a release that changes them fails here, not in a production outage."""
    worker = origin("livekit.agents.worker").read_text()
    assert f'f"{reconnect.RETRY_MESSAGE} in {{retry_delay}}s"' in worker
    schedule = re.search(r"retry_delay = min\(retry_count \* (\d+), (\d+)\)", worker)
    assert schedule is not None, "livekit's reconnect wait is no longer min(n * a, b)"
    a, b = int(schedule[1]), int(schedule[2])
    assert [reconnect.retry_delay(n) for n in range(8)] == [float(min(n * a, b)) for n in range(8)]

    native = (origin("livekit.rtc").parent / "resources" / "liblivekit_ffi.so").read_bytes()
    for text in reconnect.RTC_ENGINE_ATTEMPTS:
        assert text.encode() in native, f"livekit's native client no longer logs {text!r}"

    guard = origin("livekit.agents.ipc.job_proc_lazy_main").read_text()
    assert "signal.signal(signal.SIGTERM, signal.SIG_IGN)" in guard


def test_no_private_livekit_name_is_reached_outside_the_compat_module() -> None:
    lk, ours = livekit_private_names(), our_private_names()
    assert "_input_ch" in lk and "_run_worker" in lk  # the scan sees livekit's privates at all
    found = [hit for path in OURS if path != COMPAT for hit in touches(path, lk, ours)]
    assert found == []


def test_the_scan_finds_a_private_name_reached_in_a_module(tmp_path: Path) -> None:
    lk = livekit_private_names()
    module = ROOT / "handler" / "_compat_scan_probe.py"
    module.write_text(
        "from livekit.rtc._ffi_client import FfiClient\n\n"
        "def f(stream, server):\n"
        "    getattr(server, '_connection_failed', False)\n"
        "    return stream._input_ch\n"
    )
    try:
        found = touches(module, lk, set())
    finally:
        module.unlink()
    assert len(found) == 3, found
