"""One-way audio latency through a livekit-server on 127.0.0.1, by publish option: what the room
adds to each direction of a call, with no agent in the way.

    python measurements/room_oneway.py [--onsets 10] [--stall MS] [--drop-late-silence]

Two participants in one room: A publishes a microphone track as `call` does (16 kHz, 10 ms frames
at real-time pace, `rtc.AudioSource(queue_size_ms=100)`), a 0.3 s tone every 1.2 s; B hears it as
`call` does (`rtc.AudioStream` at 16 kHz in 10 ms frames) and takes a frame above -40 dBFS after
quiet as an onset. Latency = B's onset - the wall time A's first tone frame was due. Printed for
RED (redundant audio, livekit's default for a microphone) on and off. `--stall MS` blocks A's loop
once before the first tone, as a busy machine does to a caller; `--drop-late-silence` applies the
caller's cure (`handler.room.caller.late_silence`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from livekit import api, rtc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handler.fakes.livekit_server import LiveKitServer, install  # noqa: E402
from handler.room.caller import ONSET_DBFS, late_silence  # noqa: E402

RATE, SAMPLES, TICK = 16000, 160, 0.01
PERIOD, TONE, LEAD = 120, 30, 200
"""Ticks between onsets, of tone, and of silence before the first one."""


def token(lk: LiveKitServer, identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(lk.api_key, lk.api_secret).with_identity(identity).with_grants(grants).to_jwt()


async def listen(track: rtc.Track, onsets: list[float]) -> None:
    limit = 32768 * 10 ** (ONSET_DBFS / 20)
    last = 0.0
    async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=10):
        now = time.time()
        pcm = np.frombuffer(ev.frame.data, np.int16).astype(np.float64)
        if pcm.size and np.sqrt(np.mean(pcm**2)) > limit:
            if now - last > 0.25:
                onsets.append(now)
            last = now


async def one_way(lk: LiveKitServer, room: str, *, red: bool, args: argparse.Namespace) -> list[float]:
    a, b = rtc.Room(), rtc.Room()
    onsets: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    b.on("track_subscribed", lambda track, *_: tasks.append(asyncio.create_task(listen(track, onsets))))
    await b.connect(lk.url, token(lk, "b", room))
    await a.connect(lk.url, token(lk, "a", room))
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, red=red)
    await a.local_participant.publish_track(track, options)
    n = np.arange(TONE * SAMPLES)
    tone = (0.25 * 32767 * np.sin(2 * np.pi * 440 * n / RATE)).astype(np.int16)
    silence = np.zeros(SAMPLES, np.int16)
    start, wall = time.monotonic(), time.time()
    sent: list[float] = []
    for tick in range(LEAD + PERIOD * args.onsets):
        await asyncio.sleep(max(0.0, start + tick * TICK - time.monotonic()))
        if tick == LEAD // 2 and args.stall:
            time.sleep(args.stall / 1000)  # the loop blocked
        k = tick - LEAD
        pcm = tone[(k % PERIOD) * SAMPLES :][:SAMPLES] if k >= 0 and k % PERIOD < TONE else silence
        if k >= 0 and k % PERIOD == 0:
            sent.append(wall + tick * TICK)
        frame = rtc.AudioFrame(pcm.tobytes(), RATE, 1, SAMPLES)
        if args.drop_late_silence and late_silence(frame, start + tick * TICK, time.monotonic()):
            continue
        await source.capture_frame(frame)
    await asyncio.sleep(1.0)
    await a.disconnect()
    await b.disconnect()
    for t in tasks:
        t.cancel()
    heard = [[o for o in onsets if s - 0.05 < o < s + 1.0] for s in sent]
    return [h[0] - s for s, h in zip(sent, heard, strict=True) if h]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onsets", type=int, default=10, help="tone onsets per session")
    ap.add_argument("--sessions", type=int, default=2, help="rooms per option (it varies by room)")
    ap.add_argument("--stall", type=int, default=0, help="block the sender's loop once for MS ms")
    ap.add_argument("--drop-late-silence", action="store_true", help="the caller's cure for a stall")
    args = ap.parse_args()
    with LiveKitServer(install()) as lk:
        print(f"{'':<10} {'p50 ms':>6} {'min':>5} {'max':>5}  per session p50")
        for red in (True, False):
            per = [await one_way(lk, f"r{red}{i}", red=red, args=args) for i in range(args.sessions)]
            every = [x for p in per for x in p]
            cols = " ".join(f"{statistics.median(p) * 1000:.0f}" for p in per if p)
            print(
                f"{'RED ' + ('on' if red else 'off'):<10} {statistics.median(every) * 1000:>6.0f} "
                f"{min(every) * 1000:>5.0f} {max(every) * 1000:>5.0f}  {cols}"
            )


if __name__ == "__main__":
    asyncio.run(main())
