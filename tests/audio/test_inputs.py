"""Audio conditioner inputs: context stacking, per-dataset windows, declared-width checks, siblings."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.audio.inputs import AudioInput, audio_track, context_indices
from lipspace.data.clip import load_clip
from lipspace.utils.errors import LipspaceError


def test_context_indices_centre_and_clamp():
    idx = context_indices(10, 8)
    assert idx.shape == (10, 8)
    assert idx[5].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # 4 before, the frame, 3 after (AD-NeRF)
    assert idx[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3] and idx[9].tolist() == [5, 6, 7, 8, 9, 9, 9, 9]
    assert context_indices(4, 1).tolist() == [[0], [1], [2], [3]]


def test_audio_track_shapes_and_dim_check(tiny_dataset):
    n = load_clip(tiny_dataset).n_frames
    w = audio_track(tiny_dataset, n, {"backend": "mel", "window": 16})
    assert w.shape == (n, 16, 80) and w.dtype == np.float32
    c = audio_track(tiny_dataset, n, {"backend": "mfcc", "window": 8, "context": 4}, declared_dim=39)
    assert c.shape == (n, 4, 8, 39)
    np.testing.assert_array_equal(c[5, 2], audio_track(tiny_dataset, n, {"backend": "mfcc", "window": 8})[5])
    with pytest.raises(LipspaceError, match="expects audio features of width 29, but backend 'mel' gives 80"):
        audio_track(tiny_dataset, n, {"backend": "mel"}, declared_dim=29, who="conditioner 'deepspeech'")
    with pytest.raises(LipspaceError, match=r"audio input options \['windw'\] are unknown"):
        AudioInput.of({"windw": 3})


def test_siblings_get_windows_from_their_own_audio(tiny_dataset):
    clip = load_clip(tiny_dataset)
    clip.attach_audio("audio", {"backend": "mel", "window": 4}, 80)
    held = clip.load_sibling(tiny_dataset / "heldout" / "utt_00")
    assert held.tracks["audio"].shape == (held.n_frames, 4, 80)
    own = audio_track(held.root, held.n_frames, {"backend": "mel", "window": 4})
    np.testing.assert_array_equal(held.tracks["audio"], own)
