"""mkdocs hook: the two generated references, written at build time from their sources.

- `<!-- generated: settings-reference -->` becomes every key of `settings.toml` (its default and
  comment) with each environment's value from `environments/*.toml`;
- `<!-- generated: hook-reference -->` becomes the plugin contract: the hook specifications and the
  provider declaration from `handler.hookspecs`' docstrings, introduced by the docstring of the
  module plugins import (`handler.api`).

The build fails (mkdocs `PluginError`, with or without `--strict`) on what would make the
reference lie: a key without its comment, an environment setting a key `settings.toml` does not
define, a hook without a docstring, a marker missing from its page.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
# The checkout being documented, not whichever copy of the package the venv's editable install
# points at (a worktree builds its own docs).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SETTINGS_MARKER = "<!-- generated: settings-reference -->"
HOOKS_MARKER = "<!-- generated: hook-reference -->"
ENV_ORDER = ("dev", "fast", "stable", "production")
LONG_VALUE = 100  # characters: a longer default is shown below its table, not in a cell

_TABLE = re.compile(r"^\[default\.([A-Za-z0-9_.-]+)\]\s*$")
_KEY = re.compile(r"^([A-Za-z0-9_-]+)\s*=")
_CONTINUATION = re.compile(r"^\s+#\s?(.*)$")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markers = {SETTINGS_MARKER: settings_reference, HOOKS_MARKER: hook_reference}
    for marker, render in markers.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown


def on_post_build(config: Any) -> None:
    """Each generated reference must be on some page: a marker deleted by accident would otherwise
    drop a reference silently."""
    docs = Path(config["docs_dir"])
    text = "".join(p.read_text() for p in docs.rglob("*.md"))
    for marker in (SETTINGS_MARKER, HOOKS_MARKER):
        if marker not in text:
            raise PluginError(f"no page under {docs} holds {marker}")


# ---------------------------------------------------------------------------- settings


def _comment(line: str) -> str | None:
    """The comment of a TOML line: text after the first `#` outside a string."""
    quote = None
    escaped = False
    for i, ch in enumerate(line):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[i + 1 :].strip()
    return None


def parse_settings(path: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """settings.toml's comments: (table -> its description, dotted key -> its comment, keys in file
    order). A key's comment is the one on its line plus the indented comment lines under it."""
    tables: dict[str, str] = {}
    comments: dict[str, str] = {}
    order: list[str] = []
    table = None
    last_key = None
    for line in path.read_text().splitlines():
        if m := _TABLE.match(line):
            table, last_key = m.group(1), None
            tables[table] = ""
        elif table is None:
            continue
        elif m := _KEY.match(line):
            last_key = f"{table}.{m.group(1)}"
            order.append(last_key)
            comments[last_key] = _comment(line) or ""
        elif (m := _CONTINUATION.match(line)) and last_key:
            comments[last_key] += " " + m.group(1).strip()
        elif line.startswith("#") and last_key is None:
            tables[table] = (tables[table] + " " + line.lstrip("# ").strip()).strip()
        elif not line.strip():
            last_key = None
    return tables, comments, order


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def environments(root: Path) -> dict[str, dict[str, Any]]:
    """Each shipped environment's own settings, dotted key -> value."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "environments").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for env, table in data.items():
            found[env] = dict(_flatten(table))
    names = [e for e in ENV_ORDER if e in found] + sorted(set(found) - set(ENV_ORDER))
    return {e: found[e] for e in names}


def declared_options() -> dict[str, tuple[Any, str, str]]:
    """Options the built-in providers declare in code (their `OPTIONS` table), dotted key ->
    (default, declaring module, the option's note): a plugin owns its defaults and their comments
    (`Provider.notes`, read by `handler.api.table` from the table's comments); a note under ""
    describes the provider's table."""
    from handler.registry import Registry

    declared = {}
    for provider in Registry.load(allow="").providers():
        if provider.origin != "built-in" or not provider.options:
            continue
        module = getattr(provider.factory, "__module__", "") or provider.origin
        notes = getattr(provider, "notes", {}) or {}
        table = f"{provider.stage}.{provider.name}"
        if notes.get(""):
            declared[table] = (None, module, notes[""])
        for option, default in provider.options.items():
            declared[f"{table}.{option}"] = (default, module, notes.get(option, ""))
    return declared


def settings_reference(root: Path = ROOT) -> str:
    settings = root / "settings.toml"
    defaults = dict(_flatten(tomllib.loads(settings.read_text())["default"]))
    tables, comments, order = parse_settings(settings)
    envs = environments(root)
    for key, (default, module, note) in declared_options().items():
        if default is None:  # the provider table's own note
            tables[key] = tables.get(key) or note
            continue
        if key in defaults:
            continue  # settings.toml's default wins over the plugin's, as when loading
        table = key.rsplit(".", 1)[0]
        if not tables.get(table):
            tables[table] = f"Declared by the `{module}` plugin (its `OPTIONS`)."
        defaults[key] = default
        comments[key] = note
        order.append(key)

    # a plugin's table right after its stage's own
    position = {t: i for i, t in enumerate(tables)}
    tables = dict(
        sorted(
            tables.items(),
            key=lambda t: (position.get(t[0].split(".")[0], len(position)), t[0].count("."), position[t[0]]),
        )
    )
    problems = [f"settings.toml or its plugin: {k} has no comment" for k in order if not comments.get(k)]
    problems += [f"settings.toml: {k} was not read as a key" for k in defaults if k not in comments]
    for env, values in envs.items():
        problems += [
            f"environments/{env}.toml sets {k}, which neither settings.toml nor a built-in plugin "
            "defines (every key needs its default and comment in settings.toml)"
            for k in values
            if k not in defaults
        ]
    if problems:
        raise PluginError("settings reference:\n  " + "\n  ".join(problems))

    out = [
        f"{len(order)} keys in {len(tables)} tables, generated from `settings.toml`, "
        "`environments/*.toml` and the options the built-in plugins declare, when the site is "
        "built (`docs/hooks/reference.py`). A blank environment cell inherits the default.",
        "",
    ]
    for table in tables:
        keys = [k for k in order if k.rsplit(".", 1)[0] == table]
        out += [f"### `[{table}]`", ""]
        if tables[table]:
            out += [tables[table], ""]
        out += [
            "| key | default | " + " | ".join(envs) + " | what |",
            "|---|---|" + "---|" * len(envs) + "---|",
        ]
        long_values = []
        for key in keys:
            default = _toml(defaults[key])
            if len(default) > LONG_VALUE:
                long_values.append((key, default))
                default_cell = "(below)"
            else:
                default_cell = _code(default)
            env_cells = [_code(_toml(v[key])) if key in v else "" for v in envs.values()]
            name = key.rsplit(".", 1)[1]
            out.append(
                f"| `{name}` | {default_cell} | " + " | ".join(env_cells) + f" | {_cell(comments[key])} |"
            )
        for key, default in long_values:
            out += ["", f"`{key}`'s default:", "", "```toml", f"{key.rsplit('.', 1)[1]} = {default}", "```"]
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------- plugin hooks


def _contract_module() -> Any:
    """The module that defines the hook specifications and the provider declaration."""
    return importlib.import_module("handler.hookspecs")


def _plugin_module() -> Any:
    """The module plugins import (`handler.api`, which re-exports the contract; `handler.hookspecs`
    before it existed)."""
    for name in ("handler.api", "handler.hookspecs"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    raise PluginError("neither handler.api nor handler.hookspecs can be imported")


def _attribute_docs(source: str, class_name: str | None) -> list[tuple[str, str, str, str]]:
    """(name, annotation, default, docstring) of each annotated attribute of a class (or of the
    module, with class_name None), the docstring being the string literal right after it."""
    tree = ast.parse(source)
    body = tree.body
    if class_name:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    found = []
    for i, node in enumerate(body):
        name = annotation = default = None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, annotation = node.target.id, ast.unparse(node.annotation)
            default = ast.unparse(node.value) if node.value else ""
        elif (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            name, annotation, default = node.targets[0].id, "", ast.unparse(node.value)
        if name is None:
            continue
        after = body[i + 1] if i + 1 < len(body) else None
        doc = ""
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            doc = inspect.cleandoc(str(after.value.value))
        found.append((name, annotation, default, doc))
    return found


def hook_reference() -> str:
    contract = _plugin_module()
    module = _contract_module()
    project = getattr(module, "PROJECT", "voice_handler")
    spec_attr = f"{project}_spec"
    source = inspect.getsource(module)
    out = [
        f"Generated from `{contract.__name__}` and `{module.__name__}` when the site is built "
        "(`docs/hooks/reference.py`).",
        "",
        inspect.getdoc(contract) or "",
        "",
        "### Hooks",
        "",
    ]
    hooks = [
        (name, fn)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if hasattr(fn, spec_attr)
    ]
    if not hooks:
        raise PluginError(f"{module.__name__} declares no hook specifications")
    for name, fn in sorted(hooks, key=lambda h: inspect.getsourcelines(h[1])[1]):
        doc = inspect.getdoc(fn)
        if not doc:
            raise PluginError(f"{module.__name__}: hook {name} has no docstring")
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.name != "self"]
        returns = "None" if sig.return_annotation is sig.empty else sig.return_annotation
        signature = ", ".join(
            f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name for p in params
        )
        out += [f"#### `{name}`", "", "```python", f"def {name}({signature}) -> {returns}", "```", ""]
        out += [doc, ""]

    if hasattr(module, "Provider"):
        out += [
            "### The provider declaration",
            "",
            "`register(stage, name, factory, **fields)` in `register_providers` declares one provider; "
            "its fields:",
            "",
            "| field | type | default | what |",
            "|---|---|---|---|",
        ]
        for name, annotation, default, doc in _attribute_docs(source, "Provider"):
            what = _cell(" ".join(doc.split())) or "—"
            out.append(f"| `{name}` | {_code(annotation)} | {_code(default) if default else ''} | {what} |")
        out.append("")
    module_docs = {n: d for n, _, _, d in _attribute_docs(source, None) if d}
    if module_docs:
        out += ["### Names", ""]
        for name, doc in module_docs.items():
            out += [f"#### `{name}`", "", doc, ""]
    return "\n".join(out)
