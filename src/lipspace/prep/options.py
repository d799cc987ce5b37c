"""What a preprocessing run (lipspace.prep.pipeline) takes and gives: ``PrepOptions``, the settings a user can set
(``lipspace-prep --help`` lists them; their checks run when the Preprocessor is made), and ``PrepResult``, a run's
per-stage seconds, cached stages, frame count and per-stage reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PrepOptions:
    """What a user can set (``lipspace-prep --help`` lists them)."""

    size: int = 512  # side of the square output frames
    max_side: int = 1280  # decode bound: a 4K source is downscaled right after decoding
    max_seconds: float | None = None  # use only the first seconds of the clip
    max_invalid_fraction: float = 0.2  # more frames without a face than this is an error
    audio_offset_s: float = 0.0  # the source's audio is this late (s; negative: early): corrected while decoding
    face_scale: float = 2.2  # crop side / face size
    face_model: str | None = None  # ICT-FaceKit npz (default: the known asset ict_face_light.npz)
    face_model_kind: str = "ict"  # "ict" or "bfm" (Deep3DFaceRecon BFM_model_front.mat, user-supplied)
    multiclass_model: str | None = None  # selfie_multiclass_256x256.tflite, when the user has it
    hair_stride: int = 2  # run the hair segmenter on one frame of every k, carried by landmarks (1 = every frame)
    stabilize: str = "none"  # "sync": SyncTalk's Head-Sync Stabilizer refines the head poses (lipspace.prep.stabilize)
    overlays: int = 6  # debug overlays written to <out>/debug
    progress: bool | None = None  # progress bars; None = only on a terminal


@dataclass
class PrepResult:
    out_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, 0 when it came from the cache
    cached: list[str] = field(default_factory=list)
    n_frames: int = 0
    summary: dict = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))
