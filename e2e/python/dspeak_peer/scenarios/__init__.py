"""The end-to-end scenarios, shared by `test_e2e.py` and the CLI."""
from .common import AUDIO_TIMEOUT, EVENT_TIMEOUT, MIN_FRAMES, new_room, wait_audio
from .three_peers import scenario_three_peers
from .two_peers import scenario_two_peers

SCENARIOS = {"two-peers": scenario_two_peers, "three-peers": scenario_three_peers}

__all__ = ["AUDIO_TIMEOUT", "EVENT_TIMEOUT", "MIN_FRAMES", "SCENARIOS", "new_room", "wait_audio",
           "scenario_two_peers", "scenario_three_peers"]
