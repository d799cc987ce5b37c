"""The off-by-one cases users keep hitting: first and last frames, even/odd windows, short audio, rates."""

import numpy as np
import pytest

from lipspace.audio.align import centre_indices, frame_windows, window_indices
from lipspace.utils.errors import LipspaceError


def ramp(t, d=2):
    return np.arange(t * d, dtype=np.float32).reshape(t, d) + 1  # +1 so zero padding is distinguishable


def test_50hz_centres_are_2t_plus_1():
    # frame t centre (t + 0.5) / 25 s = feature 2t + 1 at 50 Hz
    assert centre_indices(5, 10, 50).tolist() == [1, 3, 5, 7, 9]


def test_100hz_mel_centres_are_4t_plus_2():
    assert centre_indices(3, 12, 100).tolist() == [2, 6, 10]


def test_non_integer_feature_rate():
    # 37.5 Hz features: frame 0 centre at 0.75 features -> 1; frame 1 at 2.25 -> 2; frame 2 at 3.75 -> 4
    assert centre_indices(3, 10, 37.5).tolist() == [1, 2, 4]


def test_even_window_is_8_before_7_after_as_adnerf():
    idx = window_indices(1, 100, 16, 50)
    assert idx[0].tolist() == list(range(1 - 8, 1 + 8))


def test_odd_window_is_symmetric():
    idx = window_indices(3, 100, 5, 50)
    assert idx[1].tolist() == [1, 2, 3, 4, 5]


def test_first_frame_zero_padded_left():
    w = frame_windows(ramp(20), 10, 16, 50)
    assert w.shape == (10, 16, 2)
    assert (w[0, :7] == 0).all() and (w[0, 7:] != 0).all()
    assert w[0, 8, 0] == ramp(20)[1, 0]  # the window's centre slot holds feature 1


def test_last_frame_zero_padded_right_and_centre_is_last_feature():
    feats = ramp(20)
    w = frame_windows(feats, 10, 16, 50)
    assert centre_indices(10, 20, 50)[-1] == 19
    assert w[-1, 8, 0] == feats[19, 0] and (w[-1, 9:] == 0).all()


def test_short_audio_clamps_last_centre():
    # 12 video frames need 24 features; only 20 exist: the last frames keep the last feature as centre
    c = centre_indices(12, 20, 50)
    assert c[-3:].tolist() == [19, 19, 19]


def test_edge_padding_repeats_end_features():
    feats = ramp(20)
    w = frame_windows(feats, 10, 16, 50, pad="edge")
    assert (w[0, :8] == feats[0]).all() and (w[-1, 9:] == feats[-1]).all()


def test_window_of_one_is_the_centre_feature():
    feats = ramp(20)
    assert np.array_equal(frame_windows(feats, 10, 1, 50)[:, 0], feats[1::2])


def test_feature_time_offset_and_round_half_up():
    # first feature centred at 10 ms: frame 0 sits at exactly 0.5 features -> 1 (banker's rounding would give 0)
    assert centre_indices(2, 10, 50, first_feature_time_s=0.01).tolist() == [1, 3]


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, "window=0"), ({"pad": "reflect"}, "pad='reflect'"),
])
def test_bad_arguments(kwargs, match):
    args = {"features": ramp(4), "n_frames": 2, "window": 4, "feature_rate": 50, **kwargs}
    with pytest.raises(LipspaceError, match=match):
        frame_windows(**args)


def test_empty_features_error():
    with pytest.raises(LipspaceError, match="empty"):
        frame_windows(np.zeros((0, 3)), 2, 4, 50)
