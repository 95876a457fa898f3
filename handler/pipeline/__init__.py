"""The pipeline core: resolved stages -> a livekit `AgentSession` and its `Agent` (session), the worker
that runs one per job (worker, job_preload, worker_load, reload), the process's pooled HTTP session and
retry policy (http, retry), what a provider factory receives (runtime), the turn tracker (turns) and
the first-phrase TTS (first_phrase)."""
