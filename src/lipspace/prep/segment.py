"""MediaPipe ImageSegmenter wrappers (IMAGE mode, confidence masks): person, hair and optional 6-class maps.

Models (all run offline under mediapipe 1.2.2's Tasks ImageSegmenter):

- ``selfie_segmenter.tflite``: person vs background, input 256x256, one confidence mask (label ``selfie``).
  Frames are shrunk to 256x256 (INTER_AREA) before the call and the mask is enlarged back: the model sees the same
  pixels, but MediaPipe's own resize and the 512x512 float upsampling of its output are skipped (~1 ms saved).
- ``hair_segmenter_derived.tflite``: background/hair, input 512x512x4 (the legacy model's 4th channel was a
  recurrent previous mask; the Tasks graph fills it itself, an RGBA input's alpha is ignored — measured), ~16 ms on
  one core whatever the input size: this is the expensive model, see ``parse_frames(hair_stride=...)``.
- ``selfie_multiclass_256x256.tflite`` (optional, user supplied): background, hair, body-skin, face-skin, clothes,
  others. When given it replaces both models above (it has its own hair class).

All maps are uint8 probabilities 0..255 at the frame's resolution. ``segment()`` releases the GIL while TFLite runs
(measured: a Python thread keeps running during a call), and each model uses a single core.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lipspace.utils.errors import LipspaceError

MULTICLASS_LABELS = ("background", "hair", "body_skin", "face_skin", "clothes", "others")


class SegmentModel:
    """One ImageSegmenter: ``segment(frame) -> uint8 [C,H,W]`` confidence maps (0..255) at the frame's size.

    ``input_size``: frames are resized to input_size x input_size before the call (None = as given)."""

    def __init__(self, path: str | Path, what: str, input_size: int | None = None):
        self.path = Path(path)
        self.input_size = input_size
        if not self.path.is_file():
            raise LipspaceError(f"{self.path}: {what} model not found; resolve it with "
                                f"lipspace.utils.assets.resolve_known('{self.path.name}') or set LIPSPACE_ASSETS "
                                "to the shared assets folder")
        try:
            import mediapipe as mp  # deferred: slow import, only preprocessing needs it
            from mediapipe.tasks.python import BaseOptions
            from mediapipe.tasks.python.vision import ImageSegmenter, ImageSegmenterOptions, RunningMode
        except ImportError as e:
            raise LipspaceError(f"mediapipe is not importable ({e}); install it with "
                                f"`pip install -c constraints.txt mediapipe==1.2.2`") from None
        self._mp = mp
        opts = ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(self.path)),
                                     running_mode=RunningMode.IMAGE, output_confidence_masks=True,
                                     output_category_mask=False)
        try:
            self._seg = ImageSegmenter.create_from_options(opts)
        except (RuntimeError, ValueError, OSError) as e:
            why = " ".join(str(e).split())[:200]
            raise LipspaceError(f"{self.path}: cannot load as a MediaPipe ImageSegmenter {what} model ({why}); "
                                f"use the official file (see ../shared/assets/README.md)") from None
        try:
            self.labels = list(self._seg.labels)
        except Exception:  # noqa: BLE001 - labels are informative only
            self.labels = []

    def segment(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise LipspaceError(f"{self.path.name}: segment needs one uint8 RGB frame [H,W,3], got "
                                f"{frame.dtype} {tuple(frame.shape)}")
        h, w = frame.shape[:2]
        img = frame
        if self.input_size is not None and (h, w) != (self.input_size, self.input_size):
            img = cv2.resize(frame, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
        res = self._seg.segment(self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                               data=np.ascontiguousarray(img)))
        maps = []
        for m in res.confidence_masks:
            a = np.asarray(m.numpy_view(), np.float32).reshape(img.shape[:2])
            u8 = cv2.convertScaleAbs(a, alpha=255.0)  # clip + round to uint8 in one pass
            if u8.shape != (h, w):
                u8 = cv2.resize(u8, (w, h), interpolation=cv2.INTER_LINEAR)
            maps.append(u8)
        return np.stack(maps)

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None


class Segmenters:
    """Open once, segment many frames, close: ``with Segmenters(selfie, hair, multiclass=None) as seg: ...``.

    ``person(frame)``, ``hair(frame)`` -> uint8 [H,W] (0..255); ``multiclass(frame)`` -> uint8 [6,H,W] in
    MULTICLASS_LABELS order (only when a multiclass model is given; it then also serves person and hair and the
    two single-purpose models are not opened)."""

    def __init__(self, selfie: str | Path | None = None, hair: str | Path | None = None,
                 multiclass: str | Path | None = None, selfie_input: int = 256):
        self._models: list[SegmentModel] = []
        self.selfie_model = self.hair_model = self.multiclass_model = None
        try:
            if multiclass is not None:
                self.multiclass_model = self._open(multiclass, "6-class selfie (multiclass)", 256)
                n = len(self.multiclass_model.labels)
                if n not in (0, len(MULTICLASS_LABELS)):
                    raise LipspaceError(f"{multiclass}: expected the 6-class selfie_multiclass_256x256 model "
                                        f"({', '.join(MULTICLASS_LABELS)}), found labels "
                                        f"{self.multiclass_model.labels}")
            else:
                if selfie is None or hair is None:
                    raise LipspaceError("Segmenters needs selfie_segmenter.tflite and hair_segmenter_derived.tflite "
                                        "paths (lipspace.utils.assets.resolve_known) or a multiclass model path")
                self.selfie_model = self._open(selfie, "selfie (person)", selfie_input)
                self.hair_model = self._open(hair, "hair", None)
        except BaseException:
            self.close()
            raise

    def _open(self, path, what, size) -> SegmentModel:
        m = SegmentModel(path, what, size)
        self._models.append(m)
        return m

    @property
    def has_multiclass(self) -> bool:
        return self.multiclass_model is not None

    def multiclass(self, frame: np.ndarray) -> np.ndarray:
        if self.multiclass_model is None:
            raise LipspaceError("multiclass(): no selfie_multiclass_256x256.tflite was given to Segmenters")
        m = self.multiclass_model.segment(frame)
        if len(m) != len(MULTICLASS_LABELS):
            raise LipspaceError(f"{self.multiclass_model.path}: returned {len(m)} confidence masks, expected 6 "
                                f"({', '.join(MULTICLASS_LABELS)})")
        return m

    def person(self, frame: np.ndarray) -> np.ndarray:
        if self.multiclass_model is not None:
            return 255 - self.multiclass(frame)[0]
        return self.selfie_model.segment(frame)[-1]

    def hair(self, frame: np.ndarray) -> np.ndarray:
        if self.multiclass_model is not None:
            return self.multiclass(frame)[1]
        return self.hair_model.segment(frame)[-1]  # masks: background, hair

    def close(self) -> None:
        for m in self._models:
            m.close()
        self._models = []

    def __enter__(self) -> Segmenters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
