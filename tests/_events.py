"""Random events in the input format of calocoffea.io.write_events, shared by the tests."""

from __future__ import annotations

import awkward as ak
import numpy as np


def make_events(n_events: int, seed: int = 1, first_event: int = 0) -> ak.Array:
    """Random events in the write_events input format, every documented field present."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, n_events)
    n_hits = int(counts.sum())
    hits = ak.zip(
        {
            "cellid": rng.integers(0, 2**62, n_hits, dtype=np.uint64),
            "layer": rng.integers(0, 40, n_hits).astype(np.int16),
            "i": rng.integers(0, 18, n_hits).astype(np.int16),
            "j": rng.integers(0, 18, n_hits).astype(np.int16),
            "x": rng.normal(0.0, 100.0, n_hits).astype(np.float32),
            "y": rng.normal(0.0, 100.0, n_hits).astype(np.float32),
            "z": rng.uniform(0.0, 1200.0, n_hits).astype(np.float32),
            "energy": rng.exponential(0.5, n_hits).astype(np.float32),
            "time": rng.normal(5.0, 1.0, n_hits).astype(np.float32),
            "flags": rng.integers(0, 16, n_hits).astype(np.uint32),
            "gain": rng.integers(0, 2, n_hits).astype(np.uint8),
        }
    )
    scalars = {
        "event": np.arange(first_event, first_event + n_events, dtype=np.int64),
        "run": np.full(n_events, 7, dtype=np.int32),
        "pdg": rng.choice(np.array([11, -211, 13], dtype=np.int32), n_events),
        "beam_energy": rng.choice([10.0, 30.0, 50.0], n_events),
        "beam_x": rng.normal(0.0, 5.0, n_events),
        "beam_y": rng.normal(0.0, 5.0, n_events),
        "edep_active": rng.uniform(0.0, 500.0, n_events),
        "fem": rng.uniform(0.0, 1.0, n_events).astype(np.float32),
        "fem_ecal": rng.uniform(0.0, 1.0, n_events).astype(np.float32),
        "fem_hcal": rng.uniform(0.0, 1.0, n_events).astype(np.float32),
    }
    return ak.zip({**scalars, "hit": ak.unflatten(hits, counts)}, depth_limit=1)
