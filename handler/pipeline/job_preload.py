"""Side-effect module: one-time work a job did on its event loop at the start of every call, done
once in livekit's forkserver instead (the worker lists it in `preload_modules`), so every job
process inherits the result. The worker's main process imports it too, before its event loop
starts (livekit's worker builds the same TLS context as it connects).

Seen in the loadtest's worker log ("event loop blocked for ... ms") and in
measurements/job_profile.py: the TLS context livekit's shared HTTP session builds from the CA bundle
(cached per process: ~40 ms idle, 400 ms on a loaded machine) and anyio's lazily imported socket
modules (the OpenAI SDK's HTTP client, 250 ms). Fork-safe: imports and an SSL context, no thread,
no event loop. A failure here is left to the first real use to report.
"""

from __future__ import annotations

import contextlib
import importlib

for _module in ("anyio._core._sockets", "anyio.abc._sockets"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)

with contextlib.suppress(Exception):
    from handler import livekit_compat

    livekit_compat.prebuild_tls_context()  # functools.cache'd: the jobs' sessions share it
