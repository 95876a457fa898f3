"""The job profiler's attribution (measurements/job_profile.py) and the modules a worker preloads."""

from __future__ import annotations

import importlib.util
import os
import threading

from handler import config
from handler.pipeline.worker import preload_modules
from handler.registry import Registry
from handler.room import cpu_profile as cp

LOOP = "/usr/lib/python3.11/asyncio/base_events.py"
SILERO = "/venv/site-packages/livekit/plugins/silero/vad.py"


def stack(*frames: str) -> str:
    return ";".join(frames)


def test_a_sample_goes_to_the_nearest_frame_that_says_whose_it_is() -> None:
    numpy_leaf = "dot (/venv/site-packages/numpy/core/multiarray.py:10)"
    assert cp.category([f"_run_once ({LOOP}:1)", f"_run_inference ({SILERO}:3)", numpy_leaf]) == (
        "VAD inference (silero)"
    )
    assert (
        cp.category([f"_run_once ({LOOP}:1)", "on_turn (/repo/handler/pipeline/turns.py:5)"])
        == "our code (handler)"
    )
    # logging is stdlib but a cost of its own, whoever logs
    log = "emit (/usr/lib/python3.11/logging/__init__.py:1)"
    assert cp.category(["on_turn (/repo/handler/pipeline/turns.py:5)", log]) == "logging"
    # an import anywhere on the stack: a process starting, whatever imports
    imp = "_find_and_load (<frozen importlib._bootstrap>:1)"
    assert cp.category(["build (/repo/handler/registry.py:1)", imp, "<module> (/s/openai/x.py:1)"]) == (
        "importing modules (job process start)"
    )
    assert cp.category([f"_run_once ({LOOP}:1)"]) == "asyncio event loop"


def test_waiting_threads_are_set_apart_not_counted() -> None:
    p = cp.Profile(rate=100)
    p.add_raw(
        [
            stack(f"run ({LOOP}:1)", "EpollSelector.select (/usr/lib/python3.11/selectors.py:468)") + " 70",
            stack(f"run ({LOOP}:1)", f"_run_inference ({SILERO}:3)") + " 20",
            stack("on_turn (/repo/handler/pipeline/turns.py:5)") + " 10",
            "garbage line",
        ]
    )
    assert (p.samples, p.idle_samples) == (30, 70)
    assert p.by_category == {"VAD inference (silero)": 20, "our code (handler)": 10}
    assert p.self_time["_run_inference (silero/vad.py)"] == 20  # lines dropped, paths cut
    assert p.inclusive["run (asyncio/base_events.py)"] == 20
    assert p.seconds(p.samples) == 0.3


def test_thread_groups_drop_numbers() -> None:
    assert cp.thread_group("tokio-rt-worker") == "tokio-rt-worker"
    assert cp.thread_group("ThreadPoolExecutor-0_1") == "ThreadPoolExecutor"
    assert cp.thread_group("worker_thread 3") == "worker_thread"


def test_thread_cpu_reads_every_thread_of_a_process() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        threads = cp.thread_cpu(os.getpid())
    finally:
        stop.set()
        t.join()
    assert threading.get_native_id() in threads and t.native_id in threads
    assert all(cpu >= 0 for _, cpu in threads.values())
    assert cp.thread_cpu(2**22 + 12345) == {}  # no such process: nothing, no error


def test_the_forkserver_preloads_what_a_production_job_imports() -> None:
    settings = config.load("production")
    modules = preload_modules(settings, Registry.load())
    # first: job processes leave a stop signal to the whole group to the worker (job_signals)
    assert modules[:2] == ["handler.pipeline.job_signals", "handler.pipeline.worker"]
    # the selected providers' SDKs and livekit plugins, which a job imported in the call before
    for m in ("openai", "livekit.plugins.openai", "livekit.plugins.elevenlabs", "livekit.plugins.soniox"):
        assert m in modules
    assert "handler_plugins.local_stt" not in modules  # providers not selected stay out
    assert len(modules) == len(set(modules))
    assert all(importlib.util.find_spec(m) is not None for m in modules)


def test_a_fallback_chain_preloads_every_provider_in_it() -> None:
    settings = config.load("production").with_overrides({"stt.fallback": ["soniox", "local"]}, "test")
    modules = Registry.load().preload_modules(settings)
    assert "livekit.plugins.soniox" in modules and "handler_plugins.engines.pocketsphinx_stt" in modules


def test_the_per_frame_voicing_check_is_an_rms_threshold() -> None:
    import numpy as np
    from livekit import rtc

    from handler.resilience.stt_guard import VOICED_RMS, _voiced

    def frame(samples: np.ndarray) -> rtc.AudioFrame:
        return rtc.AudioFrame(samples.astype(np.int16).tobytes(), 16000, 1, len(samples))

    rng = np.random.default_rng(1)
    for level in (0, VOICED_RMS * 0.9, VOICED_RMS * 1.1, 30000):
        noise = rng.normal(0, 1, 160)
        samples = np.round(noise / np.sqrt(np.mean(noise**2)) * level)
        rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
        assert _voiced(frame(samples)) == (rms >= VOICED_RMS)
    assert not _voiced(frame(np.zeros(0)))


def test_a_jobs_vad_runs_on_one_inference_thread_whatever_the_cores() -> None:
    """A job process must not start as many ONNX threads as the machine has cores: n calls would
    start n x cores threads fighting over them."""
    from handler.pipeline.runtime import Runtime

    settings = config.load("production")
    vad = Registry.load().build("vad", settings, Runtime(settings, None, None))
    options = vad._onnx_session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_the_turn_models_session_uses_the_configured_threads() -> None:
    from handler_plugins.smart_turn import model_files

    files = model_files()
    assert not isinstance(files, str), files  # the dev extra installs the model (pipecat-ai's wheel)
    from handler_plugins.engines.smart_turn import SmartTurnModel

    options = SmartTurnModel(*files, threads=2).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
