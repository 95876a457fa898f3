"""The room-less simulator behind `python -m handler simulate`.

scenario.py   TOML scenarios: turns, pauses, sounds during replies, expectations
clips.py      the user's audio for a scenario (espeak-ng speech, WAV files, noises)
io.py         the scripted microphone and the real-time speaker on one 10 ms clock
runner.py     a real AgentSession driven through a scenario; the tracker's records per turn
report.py     the report: the tracker's records plus what only the simulator measures
cloudsim.py   `--cloud-fakes`: the cloud plugins against local protocol-faithful servers
"""

from handler.sim.io import Clock
from handler.sim.report import Report, SimTurn, word_errors
from handler.sim.runner import simulate

__all__ = ["Clock", "Report", "SimTurn", "simulate", "word_errors"]
