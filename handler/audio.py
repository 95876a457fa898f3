"""PCM helpers for mono int16 audio held in numpy arrays: WAV in and out, resampling, levels."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
"""The conversation's sample rate: user audio enters and agent audio is recorded at 16 kHz."""


class AudioFileError(Exception):
    """A WAV file we cannot use; the message names the file and says what is wrong."""


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole clip with an FFT: band-limited (22.05 -> 16 kHz does not fold espeak's
    high band into the recognizer's), pure numpy, fine for one-shot clips."""
    if src_rate == dst_rate or pcm.size == 0:
        return pcm
    n_out = max(1, round(pcm.size * dst_rate / src_rate))
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    n_bins = n_out // 2 + 1
    spectrum = spectrum[:n_bins] if spectrum.size >= n_bins else np.pad(spectrum, (0, n_bins - spectrum.size))
    out = np.fft.irfft(spectrum, n_out) * (n_out / pcm.size)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


MAX_SECONDS = 600
"""The longest clip read (10 minutes): a scenario's utterance is seconds long, and a clip is read
whole and resampled in float64 (a header may claim any length)."""
WIDTHS = (1, 2, 3, 4)
"""Bytes per sample of the PCM WAVs read: 8, 16, 24 and 32 bits."""


def read_wav(path: Path) -> tuple[np.ndarray, list[str]]:
    """A WAV file as 16 kHz mono int16, and notes on any conversion (stereo, other rates, widths).
    Raises AudioFileError for a missing, empty, corrupt, non-PCM, oddly sized or too long file."""
    if not path.is_file():
        raise AudioFileError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: file is empty")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if width not in WIDTHS:
                raise AudioFileError(
                    f"{path}: {8 * width}-bit samples are not supported; allowed: 8/16/24/32-bit PCM WAV"
                )
            if rate > 0 and n / rate > MAX_SECONDS:
                raise AudioFileError(
                    f"{path}: {n / rate:.0f} s of audio is too long; allowed: up to {MAX_SECONDS} s a clip"
                )
            if channels > 8:
                raise AudioFileError(f"{path}: {channels} channels; allowed: 1 to 8 (mixed to mono)")
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise AudioFileError(f"{path}: not a PCM WAV file ({e}); allowed: 8/16/24/32-bit PCM WAV") from None
    if n == 0 or not raw:
        raise AudioFileError(f"{path}: WAV file has no audio frames")
    if rate < 8000:
        raise AudioFileError(f"{path}: sample rate {rate} Hz is too low; allowed: 8000 Hz or more")
    usable = len(raw) // (width * channels) * width * channels
    if width == 1:
        pcm = (np.frombuffer(raw[:usable], np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        pcm = np.frombuffer(raw[:usable], "<i2")
    elif width == 3:
        b = np.frombuffer(raw[:usable], np.uint8).reshape(-1, 3)
        pcm = ((b[:, 2].astype(np.int8).astype(np.int32) << 8) | b[:, 1]).astype(np.int16)
    else:
        pcm = (np.frombuffer(raw[:usable], "<i4") >> 16).astype(np.int16)
    notes = []
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
        notes.append(f"mixed {channels} channels to mono")
    if width != 2:
        notes.append(f"converted {8 * width}-bit samples to 16-bit")
    if rate != RATE:
        pcm = resample(pcm, rate, RATE)
        notes.append(f"resampled {rate} Hz to {RATE} Hz")
    return pcm.astype(np.int16), notes


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())


def trailing_silence(pcm: np.ndarray, rate: int = RATE, threshold_db: float = -45.0) -> float:
    """Seconds of near-silence at the end of a clip (so "end of speech" means the last voiced
    sample, not the end of the file)."""
    window = rate // 100
    limit = 32768 * 10 ** (threshold_db / 20)
    n = len(pcm) // window
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(pcm[: n * window].astype(np.float64).reshape(n, window) ** 2, axis=1))
    loud = np.nonzero(rms > limit)[0]
    last = loud[-1] + 1 if loud.size else 0
    return (len(pcm) - last * window) / rate


def voiced_seconds(pcm: np.ndarray, rate: int = RATE, threshold_db: float = -45.0) -> float:
    """Seconds of a track that are not near-silence, in 10 ms windows (the agent's speaking time
    on a recorded track whose gaps are silence)."""
    window = rate // 100
    n = len(pcm) // window
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(pcm[: n * window].astype(np.float64).reshape(n, window) ** 2, axis=1))
    return float(np.count_nonzero(rms > 32768 * 10 ** (threshold_db / 20))) * window / rate


def at_level(pcm: np.ndarray, level_db: float) -> np.ndarray:
    """Scale a clip to an RMS level in dBFS."""
    x = pcm.astype(np.float64)
    rms = np.sqrt(np.mean(x**2)) or 1.0
    return np.clip(x * 32768 * 10 ** (level_db / 20) / rms, -32768, 32767).astype(np.int16)


def noise_burst(duration: float, level_db: float, *, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Band-limited noise with a syllable-like 4 Hz envelope: a loud, speech-ish sound with no words
    in it (what a TV, a door or a passing conversation sounds like to a VAD)."""
    rng = np.random.default_rng(seed)
    n = int(duration * rate)
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 200) | (freqs > 3500)] = 0
    noise = np.fft.irfft(spectrum, n)
    t = np.arange(n) / rate
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    ramp = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)
    return at_level(noise * envelope * ramp, level_db)


def click(duration: float, level_db: float, *, seed: int = 1, rate: int = RATE) -> np.ndarray:
    """A cough-like click: a sharp noise transient decaying within `duration`."""
    rng = np.random.default_rng(seed)
    n = int(duration * rate)
    t = np.arange(n) / rate
    burst = rng.standard_normal(n) * np.exp(-t / (duration / 5))
    burst /= np.max(np.abs(burst)) or 1
    return np.clip(burst * 32767 * 10 ** (level_db / 20), -32768, 32767).astype(np.int16)


def frames_to_mono(buffer: Any) -> tuple[np.ndarray, int]:
    """livekit audio frame(s) -> (mono int16 samples, sample rate)."""
    from livekit import rtc

    if isinstance(buffer, list):
        if not buffer:
            return np.zeros(0, dtype=np.int16), RATE
        buffer = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(buffer.data, dtype=np.int16)
    if buffer.num_channels > 1:
        pcm = pcm.reshape(-1, buffer.num_channels).mean(axis=1).astype(np.int16)
    return pcm, buffer.sample_rate
