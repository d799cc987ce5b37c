"""MediaPipe ImageSegmenter wrappers: errors naming the model file, map shapes, the 6-class path (mocked)."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep import segment as seg_mod
from lipspace.prep.segment import MULTICLASS_LABELS, SegmentModel, Segmenters
from tests.conftest import assets_dir


def test_missing_model_names_the_file(tmp_path):
    p = tmp_path / "nope_selfie.tflite"
    with pytest.raises(LipspaceError, match="nope_selfie.tflite: selfie") as e:
        SegmentModel(p, "selfie")
    assert "\n" not in str(e.value)
    with pytest.raises(LipspaceError, match="nope_selfie.tflite"):
        Segmenters(p, p)


def test_garbage_model_names_the_file(tmp_path):
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    p = tmp_path / "garbage_hair.tflite"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(LipspaceError, match=r"garbage_hair.tflite: cannot load") as e:
        SegmentModel(p, "hair")
    assert "\n" not in str(e.value)


def test_segmenters_need_models():
    with pytest.raises(LipspaceError, match="selfie_segmenter.tflite"):
        Segmenters(None, None)


class FakeModel:
    """Stands in for SegmentModel: n confidence maps, map k = k * 40 everywhere."""

    instances: list = []

    def __init__(self, path, what, input_size=None, n=6):
        self.path, self.what, self.input_size = path, what, input_size
        self.labels = list(MULTICLASS_LABELS)
        self.closed = False
        FakeModel.instances.append(self)

    def segment(self, frame):
        h, w = frame.shape[:2]
        return np.stack([np.full((h, w), 40 * k, np.uint8) for k in range(6)])

    def close(self):
        self.closed = True


def test_multiclass_path_mocked(monkeypatch, tmp_path):
    FakeModel.instances = []
    monkeypatch.setattr(seg_mod, "SegmentModel", FakeModel)
    frame = np.zeros((32, 48, 3), np.uint8)
    with Segmenters("selfie.tflite", "hair.tflite", multiclass=tmp_path / "mc.tflite") as s:
        assert s.has_multiclass and len(FakeModel.instances) == 1  # selfie / hair models not opened
        mc = s.multiclass(frame)
        assert mc.shape == (6, 32, 48) and mc.dtype == np.uint8
        assert (s.person(frame) == 255).all()  # 1 - background (0)
        assert (s.hair(frame) == 40).all()  # class 1
    assert FakeModel.instances[0].closed


def test_multiclass_wrong_label_count(monkeypatch, tmp_path):
    class TwoLabels(FakeModel):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.labels = ["background", "selfie"]

    monkeypatch.setattr(seg_mod, "SegmentModel", TwoLabels)
    with pytest.raises(LipspaceError, match="6-class"):
        Segmenters(multiclass=tmp_path / "selfie_segmenter.tflite")


def test_multiclass_missing_raises_when_asked(monkeypatch):
    FakeModel.instances = []
    monkeypatch.setattr(seg_mod, "SegmentModel", FakeModel)
    with Segmenters("selfie.tflite", "hair.tflite") as s:
        assert not s.has_multiclass and len(FakeModel.instances) == 2
        with pytest.raises(LipspaceError, match="multiclass"):
            s.multiclass(np.zeros((4, 4, 3), np.uint8))
    assert all(m.closed for m in FakeModel.instances)


ASSETS = assets_dir()
needs_models = pytest.mark.skipif(
    ASSETS is None or not (ASSETS / "models" / "hair_segmenter_derived.tflite").is_file(),
    reason="shared assets not present (../shared/assets/models or $LIPSPACE_ASSETS)")


@needs_models
def test_real_models_on_a_real_image():
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    import cv2

    from lipspace.prep.io import decode_video_25fps

    frames, _ = decode_video_25fps(ASSETS / "video" / "may_en_25fps_5s.mp4", max_seconds=0.08)
    h, w = frames.shape[1:3]
    side = min(h, w)
    frame = cv2.resize(frames[0][:side, (w - side) // 2:(w - side) // 2 + side], (384, 384))
    m = ASSETS / "models"
    with Segmenters(m / "selfie_segmenter.tflite", m / "hair_segmenter_derived.tflite") as s:
        assert s.selfie_model.labels == ["selfie"] and s.hair_model.labels == ["background", "hair"]
        person, hair = s.person(frame), s.hair(frame)
        with pytest.raises(LipspaceError, match="uint8 RGB"):
            s.person(frame[..., 0])
    for x in (person, hair):
        assert x.shape == (384, 384) and x.dtype == np.uint8
    # A close-up: the centre is person, the top corners are room; hair on top of the head, none on the mouth.
    assert person[192, 192] > 200 and person[:20, :20].mean() < 60
    assert 0.05 < (hair > 127).mean() < 0.6
    assert (hair[(person < 50)] > 127).mean() < 0.1
