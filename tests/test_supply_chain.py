"""What the worker and the tests run is what was reviewed: the Smart Turn model and feature
extractor by SHA-256, livekit-server and kubeconform by the release their build information names
(issue 23, finding 8; the image's hashed lock and its manifests are checked in test_deploy.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from handler.fakes import livekit_server
from handler.fakes.go_tools import ToolNotFound, built_version
from handler_plugins.engines import smart_turn_files as smart_turn


def test_the_smart_turn_files_installed_are_the_reviewed_ones() -> None:
    found = smart_turn.model_files()
    assert not isinstance(found, str), found
    for name, path in zip((smart_turn.MODEL, smart_turn.FEATURES), found, strict=True):
        assert smart_turn.read_verified(path, smart_turn.SHA256[name]) == path.read_bytes()


def test_a_tampered_model_file_is_refused_by_name_before_it_is_loaded(tmp_path: Path) -> None:
    found = smart_turn.model_files()
    assert not isinstance(found, str), found
    for name, path in zip((smart_turn.MODEL, smart_turn.FEATURES), found, strict=True):
        copy = tmp_path / path.name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit
        copy.write_bytes(bytes(data))
        with pytest.raises(smart_turn.ChecksumError) as e:
            smart_turn.read_verified(copy, smart_turn.SHA256[name])
        assert str(copy) in str(e.value) and smart_turn.SHA256[name] in str(e.value)
        assert "refusing to load it" in str(e.value)


def test_the_engine_loads_the_checked_bytes() -> None:
    """The model session and the extractor come from the bytes whose digest was checked."""
    import numpy as np

    from handler_plugins.engines.smart_turn import load

    model = load(1)
    assert 0.0 <= model.probability(np.zeros(16000, np.int16)) <= 1.0


def fake_go_binary(path: Path, module: str, version: str) -> Path:
    """A file carrying Go's build information the way a binary embeds it."""
    path.write_bytes(
        b"\x7fELF...\npath\tx\nmod\t" + module.encode() + b"\t" + version.encode() + b"\th1:abc=\n"
    )
    path.chmod(0o755)
    return path


def test_livekit_server_named_by_the_variable_must_be_the_pinned_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = fake_go_binary(tmp_path / "livekit-server", "github.com/livekit/livekit-server", "v1.9.0")
    monkeypatch.setenv(livekit_server.BIN_VAR, str(other))
    with pytest.raises(ToolNotFound) as e:
        livekit_server.find()
    assert f"{livekit_server.BIN_VAR}={other} is livekit-server v1.9.0, not the pinned v1.13.5" in str(
        e.value
    )
    pinned = fake_go_binary(tmp_path / "pinned", "github.com/livekit/livekit-server", livekit_server.VERSION)
    monkeypatch.setenv(livekit_server.BIN_VAR, str(pinned))
    assert livekit_server.find() == pinned


def test_a_livekit_server_on_path_of_another_release_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(livekit_server.BIN_VAR, raising=False)
    fake_go_binary(tmp_path / "livekit-server", "github.com/livekit/livekit-server", "v1.8.0")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(ToolNotFound, match="on PATH.* is livekit-server v1.8.0, not the pinned"):
        livekit_server.find()
    (tmp_path / "livekit-server").write_text("#!/bin/sh\necho livekit-server version 1.13.5\n")
    with pytest.raises(ToolNotFound, match="of unknown version"):  # says the right thing, is not it
        livekit_server.find()


def test_the_cached_builds_report_their_pinned_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(livekit_server.BIN_VAR, raising=False)
    found = livekit_server.SERVER.cache_dir / "livekit-server"
    if not found.is_file() or shutil.which("livekit-server"):
        pytest.skip("no cached livekit-server build here")
    assert built_version(found, livekit_server.MODULE) == livekit_server.VERSION
    assert livekit_server.find() == found
