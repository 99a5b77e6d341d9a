"""dspeak end-to-end test peer: unmodified pymediasoup + aiortc over dspeak's JSON-RPC
signaling.

    peer = Peer("alice")
    await peer.connect("ws://127.0.0.1:8080")       # subscribeEvents + wait for `welcome`
    await peer.join("room-1", "Alice")               # loads the mediasoup Device
    producer_id = await peer.produce_tone(440.0)     # sine tone, 48 kHz, 20 ms frames
    # or peer.produce_speech(SpeechTrack())          # bursts at -9 / -43 dBov
    stats = await peer.consume(other_producer_id)    # consume + resumeConsumer + frame counting
    await stats.wait_nonsilent(25, timeout=5)

Modules: `rpc` (JSON-RPC client), `audio` (tone source and analysis), `peer` (`Peer`),
`scenarios` (what `test_e2e.py` runs), `__main__` (CLI: `python -m dspeak_peer --help`).
Every network wait has a timeout; a broken server raises a clear exception instead of
hanging.
"""
from .audio import (FREQ_TOLERANCE, NONSILENT_RMS, SAMPLE_RATE, AudioStats, SpeechTrack,
                    ToneTrack, check_frequency, dbov_amplitude, dominant_frequency,
                    frame_mono_samples, frame_rms)
from .peer import DEFAULT_URL, ConsumerInfo, Peer
from .rpc import RpcError, SignalingClosed, JsonRpcClient
from .scenarios import (AUDIO_TIMEOUT, EVENT_TIMEOUT, SCENARIOS, new_room,
                        scenario_three_peers, scenario_two_peers)

__all__ = [
    "AUDIO_TIMEOUT", "DEFAULT_URL", "EVENT_TIMEOUT", "FREQ_TOLERANCE", "NONSILENT_RMS",
    "SAMPLE_RATE", "SCENARIOS", "AudioStats", "ConsumerInfo", "JsonRpcClient", "Peer",
    "RpcError", "SignalingClosed", "SpeechTrack", "ToneTrack", "check_frequency",
    "dbov_amplitude", "dominant_frequency",
    "frame_mono_samples", "frame_rms", "new_room", "scenario_three_peers",
    "scenario_two_peers",
]
