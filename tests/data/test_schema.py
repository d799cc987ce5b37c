import json
import shutil

import numpy as np
import pytest

from lipspace.data.schema import validate_dataset
from lipspace.utils.errors import LipspaceError


def copy(tiny_dataset, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dst)
    return dst


def test_valid_dataset_passes(tiny_dataset):
    meta = validate_dataset(tiny_dataset)
    assert meta["n_frames"] == 20 and meta["fps"] == 25


def test_missing_directory(tmp_path):
    with pytest.raises(LipspaceError, match="does not exist"):
        validate_dataset(tmp_path / "nope")


def test_missing_meta(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    (d / "meta.json").unlink()
    with pytest.raises(LipspaceError, match="meta.json"):
        validate_dataset(d)


def test_malformed_meta(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(LipspaceError, match="not valid JSON"):
        validate_dataset(d)


def test_wrong_schema_version(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["schema_version"] = 99
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LipspaceError, match="schema_version"):
        validate_dataset(d)


def test_track_shape_mismatch(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    tracks = dict(np.load(d / "tracks.npz"))
    tracks["pose"] = tracks["pose"][:-1]
    np.savez(d / "tracks.npz", **tracks)
    with pytest.raises(LipspaceError, match="'pose' has shape"):
        validate_dataset(d)


def test_nan_in_tracks(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    tracks = dict(np.load(d / "tracks.npz"))
    tracks["expr"][3, 0] = np.nan
    np.savez(d / "tracks.npz", **tracks)
    with pytest.raises(LipspaceError, match="NaN"):
        validate_dataset(d)


def test_truncated_tracks_file(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    data = (d / "tracks.npz").read_bytes()
    (d / "tracks.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(LipspaceError, match="unreadable"):
        validate_dataset(d)


def test_missing_frame_files(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    (d / "frames" / "000005.png").unlink()
    with pytest.raises(LipspaceError, match="holds 19 PNG"):
        validate_dataset(d)


def test_audio_length_mismatch(tiny_dataset, tmp_path):
    import soundfile as sf

    d = copy(tiny_dataset, tmp_path)
    sf.write(d / "audio.wav", np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(LipspaceError, match="lasts 3.000 s"):
        validate_dataset(d)


def test_heldout_validated_too(tiny_dataset, tmp_path):
    d = copy(tiny_dataset, tmp_path)
    (d / "heldout" / "utt_00" / "audio.wav").unlink()
    with pytest.raises(LipspaceError, match="utt_00"):
        validate_dataset(d)
