"""How far a setting travels from the loaded configuration to the livekit objects of a session.

    python measurements/setting_path.py [--env production]

Loads and checks the environment, then builds a job's session exactly as the worker's entrypoint
does (the runtime, the pre-warm, the session), for the cloud stack against no server (nothing
connects: the session is built, not started), and follows every call into the project's own
modules with a profiler hook. Prints:

  modules      the project's modules the build passes through, in first-visit order
  registry     calls into handler.registry from other modules (each a trip back to the registry)
  options      times a provider's options were computed (`Registry.options`)
  retry        times the retry policy was built (the `retry` provider's factory)
  stt reads    reads of the [stt] settings, and the modules that read them
  per setting  for `stt.soniox.model`: the modules between the loaded settings and the factory
               that hands it to livekit (the call stack when the factory runs)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

OURS = ("handler.", "handler_plugins.")


def _module(frame: Any) -> str:
    return frame.f_globals.get("__name__", "")


async def _build(settings: Any, registry: Any) -> Any:
    """What `handler.pipeline.worker.entrypoint` does before it connects."""
    try:
        from handler import plan as plans
        from handler.pipeline.session import build, start_warming
    except ImportError:  # before the plan existed
        try:
            from handler.pipeline.session import build_session, make_runtime, start_prewarm
        except ImportError:  # and before the house moves
            from handler.session import (  # type: ignore[import-not-found,no-redef]
                build_session,
                make_runtime,
                start_prewarm,
            )

        runtime = make_runtime(settings, registry)
        warming = start_prewarm(settings, registry, runtime)
        session, _ = build_session(settings, registry, runtime)
        return session, warming
    plan = plans.resolve(settings, registry)
    runtime = plan.runtime(http_session=None, pooled=True)
    warming = start_warming(plan, runtime)
    session, _ = build(plan, runtime)
    return session, warming


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="production")
    args = parser.parse_args()

    from handler import registry as registries
    from handler.sim import cloudsim

    # where a provider's options are computed: `Registry.options` itself before they were
    # computed once per settings object (then in `_options_of`)
    computes = "_options_of" if hasattr(registries.Registry, "_options_of") else "options"
    visited: list[str] = []
    registry_calls = options = retry = 0
    phase = {"load": 0, "build": 0}
    now = "load"
    soniox_stack: list[str] = []
    readers: dict[str, int] = {}

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal registry_calls, options, retry, now
        if event != "call":
            return
        callee = _module(frame)
        if not callee.startswith(OURS):
            return
        if callee not in visited:
            visited.append(callee)
        caller = _module(frame.f_back) if frame.f_back else ""
        code = frame.f_code.co_name
        if callee == "handler.config" and code in ("get", "section"):
            key = str(frame.f_locals.get("path", frame.f_locals.get("name", "")))
            if key.split(".")[0] == "stt" and caller != "handler.config":
                readers[caller] = readers.get(caller, 0) + 1
        if callee == "handler.registry" and caller != "handler.registry":
            registry_calls += 1
            phase[now] += 1
        if callee == "handler.registry" and code == computes:
            options += 1
        if callee == "handler_plugins.retry_default" and code == "build":
            retry += 1
        if callee == "handler_plugins.soniox_stt" and code == "build" and not soniox_stack:
            f, stack = frame, []
            while f is not None:
                m = _module(f)
                if m.startswith(OURS) and (not stack or stack[-1] != m):
                    stack.append(m)
                f = f.f_back
            soniox_stack.extend(reversed(stack))

    async def run() -> None:
        try:
            from handler.pipeline.http import close_shared_session
        except ImportError:  # before the house moves
            from handler.http import close_shared_session  # type: ignore[import-not-found,no-redef]

        sys.setprofile(profile)
        try:
            settings, registry = cloudsim.load_checked(args.env)
            nonlocal now
            now = "build"
            session, warming = await _build(settings, registry)
        finally:
            sys.setprofile(None)
        if warming is not None:
            warming.cancel()
        await session.aclose()
        await close_shared_session()

    asyncio.run(run())
    print(f"env {args.env}: the cloud stack's session, loaded, checked and built as the worker does")
    print(f"modules     {len(visited)}: {', '.join(visited)}")
    print(
        f"registry    {registry_calls} calls into handler.registry from other modules "
        f"({phase['load']} loading and checking, {phase['build']} building the session)"
    )
    print(f"options     {options} computations of a provider's options")
    print(f"retry       {retry} builds of the retry policy")
    print(
        f"stt reads   {sum(readers.values())} reads of [stt] settings in {len(readers)} modules: "
        + ", ".join(f"{m} ({n})" for m, n in readers.items())
    )
    print(f"per setting stt.soniox.model crosses {len(soniox_stack)} modules: {' -> '.join(soniox_stack)}")


if __name__ == "__main__":
    main()
