"""Small PCM helpers shared by the local STT and TTS (mono int16 numpy arrays)."""

from __future__ import annotations

import numpy as np
from livekit import rtc


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole mono int16 clip.

    FFT method: one-shot buffers only (no streaming state), but it is band-limited, so going
    22050 -> 16000 Hz does not fold espeak's 8-11 kHz energy back into the recognizer's band
    (plain linear interpolation would), and it is pure numpy, so it is safe in worker threads.
    """
    if src_rate == dst_rate or pcm.size == 0:
        return pcm
    n_out = max(1, round(pcm.size * dst_rate / src_rate))
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    n_bins = n_out // 2 + 1
    if spectrum.size >= n_bins:
        spectrum = spectrum[:n_bins]
    else:
        spectrum = np.pad(spectrum, (0, n_bins - spectrum.size))
    out = np.fft.irfft(spectrum, n_out) * (n_out / pcm.size)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def frames_to_mono(buffer: rtc.AudioFrame | list[rtc.AudioFrame]) -> tuple[np.ndarray, int]:
    """Concatenate frames and downmix to mono int16; returns (samples, sample_rate)."""
    if isinstance(buffer, list):
        if not buffer:
            return np.zeros(0, dtype=np.int16), 16000
        buffer = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(buffer.data, dtype=np.int16)
    if buffer.num_channels > 1:
        pcm = pcm.reshape(-1, buffer.num_channels).mean(axis=1).astype(np.int16)
    return pcm, buffer.sample_rate
