"""`config show|check` and `plugins list`: the effective configuration, where each value came from, and
the providers."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from handler import config
from handler.cli.common import (
    START,
    EnvOption,
    JsonOption,
    app,
    user_errors,
)
from handler.hookspecs import PROVIDER_STAGES, SINK_STAGES, STAGES, selector
from handler.plan import load

config_app = typer.Typer(help="Show or check the effective configuration.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")


def flatten(settings: config.Settings) -> dict[str, dict[str, Any]]:
    from handler import redaction

    out = {}
    for path, value in config._walk(settings.data):
        source = settings.source(path)
        out[path] = {"value": config.REDACTED if redaction.hidden(path, source) else value, "source": source}
    return out


@config_app.command("show")
@user_errors
def config_show(env: EnvOption = None, as_json: JsonOption = False) -> None:
    """The effective settings and where each value came from (secrets redacted)."""
    # shows what is there even when it would not pass `config check`
    settings = load(env, check=False).settings
    values = flatten(settings)
    secrets = {
        name: {
            "set": settings.secret(name) is not None,
            "value": config.REDACTED if settings.secret(name) else None,
            "source": settings.secret_source(name),
        }
        for name in config.SECRETS
    }
    if as_json:
        doc = {"env": settings.env, "root": str(settings.root), "settings": values, "secrets": secrets}
        # a secret pasted into a setting is redacted here as everywhere
        print(config.redact(json.dumps(doc, indent=2), settings.secret_values()))
        return
    lines = [f"environment: {settings.env}    (root: {settings.root})"]
    width = max(len(k) for k in values)
    for key, v in values.items():
        lines.append(f"  {key:<{width}}  {json.dumps(v['value']):<28}  {v['source']}")
    lines.append("secrets:")
    for name, s in secrets.items():
        lines.append(f"  {name:<{width}}  {(s['value'] or 'not set'):<28}  {s['source'] or ''}")
    print(config.redact("\n".join(lines), settings.secret_values()))


@config_app.command("check")
@user_errors
def config_check(
    env: EnvOption = None,
    for_start: Annotated[
        bool, typer.Option("--start", help="Also require the LiveKit credentials `start` needs.")
    ] = False,
) -> None:
    """Validate the configuration: every problem at once, exit status 2 if any."""
    settings = load(env, livekit_for=START if for_start else None).settings
    chosen = ", ".join(f"{s}={settings.get(selector(s))}" for s in PROVIDER_STAGES)
    print(f"configuration OK (environment {settings.env}: {chosen})")


# ------------------------------------------------------------------------------ plugins


@plugins_app.command("list")
@user_errors
def plugins_list(env: EnvOption = None, as_json: JsonOption = False) -> None:
    """Every stage, its available providers, the one this environment selects, and their origin."""
    plan = load(env, check=False)
    settings, registry = plan.settings, plan.registry
    stages = {
        stage: {
            "selected": settings.get(selector(stage)),
            "providers": [
                {
                    "name": p.name,
                    "origin": p.origin,
                    "selected": p.name in registry.selected(settings, stage)
                    if stage in SINK_STAGES
                    else p.name == settings.get(selector(stage)),
                }
                for p in registry.providers()
                if p.stage == stage
            ],
        }
        for stage in STAGES
    }
    overridden = [{"stage": p.stage, "name": p.name, "origin": p.origin} for p in registry.overridden]
    plugins = [{"name": n, "origin": o} for n, o in registry.plugins()]
    if as_json:
        doc = {"env": settings.env, "stages": stages, "overridden": overridden, "plugins": plugins}
        print(json.dumps(doc, indent=2))
        return
    print(f"environment: {settings.env}")
    for stage, info in stages.items():
        print(f"{stage}:")
        for p in info["providers"]:
            mark = "*" if p["selected"] else " "
            print(f"  {mark} {p['name']:<14} {p['origin']}")
        if not any(p["selected"] for p in info["providers"]) and info["selected"] != []:
            print(f"  ! selected provider {info['selected']!r} is not installed")
    for p in overridden:
        print(f"(overridden: {p['stage']}/{p['name']} from {p['origin']})")
    print("plugins: " + ", ".join(f"{p['name']} ({p['origin']})" for p in plugins))


# ------------------------------------------------------------------------------ logs
