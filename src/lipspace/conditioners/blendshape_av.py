"""SyncTalk's space (Peng et al., CVPR 2024): audio-visual encoder features for the lips + upper-face blendshapes for
the expression, each a declared region of c that the renderer gates per point (facial-aware masked attention).

c = [lip code | exp code]:

- lip code (``dim_aud``): the ``audio`` input, by default ``ave`` features (lipspace.av.backend: the locally
  trained SyncTalk-style audio-visual encoder, 256-d per frame, NOT SyncTalk's official LRS2 encoder), through a
  per-frame MLP (SyncTalk's ``AudioNet_ave``-style: Linear -> LeakyReLU -> Linear) when ``audio.window`` is 1 or
  AD-NeRF's AudioNet (1-D convs) for longer windows (e.g. ``mel``), then smoothed over ``audio.context``
  neighbouring frames by AudioAttNet (ER-NeRF / SyncTalk's audio attention over 8 frames).
- exp code (``exp_dim``): 7 upper-face MediaPipe blendshapes through a small MLP (Linear -> ReLU -> Linear).
  The 7 (:data:`UPPER_FACE`) are browDownLeft, browDownRight, browInnerUp, browOuterUpLeft, browOuterUpRight,
  eyeBlinkLeft, eyeBlinkRight: SyncTalk's upper-face selection (brow raise / lower and blinks; as far as we read its
  loader, columns 0-4 and 8-9 of its 51-column blendshape array, which lacks MediaPipe's ``_neutral``). They are
  the coefficients that move only the eyes and brows: eye-look / squint / wide coefficients are dropped because
  MediaPipe's estimates of them are noisy and gaze is not a speech signal, cheek / nose / mouth coefficients
  belong to the lower face, which the audio drives.

Regions (``self.regions``, read by the system): ``lip`` -> parsing classes lips (3) + mouth interior (4); ``exp``
-> eyes (5) + brows (6). The forehead skin above the eyes would belong to ``exp`` in SyncTalk, but the parsing
has no class for it (face_skin, 2, covers cheeks and chin too), so it is left to neither region.

Driving by audio alone (``driving_by_audio()``): blendshapes do not come from audio, so the upper face is the
training clip's mean of the 7 coefficients (a neutral face, computed in :meth:`prepare` on training frames only)
plus a fixed blink schedule: one blink every ``blink_period_s`` (4 s, about 15 blinks a minute, a typical
conversational rate) lasting ``len(BLINK_PROFILE)`` frames (0.2 s), eyeBlink rising to the clip's 95th percentile.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lipspace.conditioners.audio_net import AudioAttNet, AudioNet
from lipspace.conditioners.base import Conditioner
from lipspace.data.schema import MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError

UPPER_FACE = ("browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
              "eyeBlinkLeft", "eyeBlinkRight")
LIP_CLASSES = (3, 4)  # lips, mouth interior (schema.PARSING_CLASSES)
EXP_CLASSES = (5, 6)  # eyes, brows
BLINK_PROFILE = (0.35, 0.8, 1.0, 0.8, 0.35)  # eyelid closure over the frames of one scheduled blink


class FrameAudioNet(nn.Module):
    """[B, 1, dim] per-frame features (window 1, e.g. ``ave``) -> [B, dim_aud]: SyncTalk's AudioNet_ave shape."""

    def __init__(self, feat_dim: int, dim_aud: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feat_dim, hidden), nn.LeakyReLU(0.02, True), nn.Linear(hidden, dim_aud))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, 0])


class BlendshapeAVConditioner(Conditioner):
    """c = [AudioAttNet(audio codes of ``context`` frames) (``dim_aud``) | exp MLP(7 upper-face blendshapes)
    (``exp_dim``)]; ``regions`` maps ``lip`` / ``exp`` to those column slices and their parsing classes."""

    name = "blendshape_av"

    def __init__(self, inputs: dict[str, int] | None = None, audio: dict | None = None, dim_aud: int = 32,
                 exp_dim: int = 16, exp_hidden: int = 32, upper_face=UPPER_FACE, lip_classes=LIP_CLASSES,
                 exp_classes=EXP_CLASSES, blink_period_s: float = 4.0, out_dim: int | None = None):
        super().__init__(inputs or {"audio": 80, "blendshapes": 52}, None)
        if set(self.inputs) != {"audio", "blendshapes"}:
            raise LipspaceError(f"conditioner 'blendshape_av' reads exactly 'audio' and 'blendshapes', got "
                                f"{self.inputs}. Set conditioner.inputs={{audio: <backend width>, blendshapes: 52}}.")
        if self.inputs["blendshapes"] != len(MP_BLENDSHAPE_NAMES):
            raise LipspaceError(f"conditioner 'blendshape_av': blendshapes must be the {len(MP_BLENDSHAPE_NAMES)} "
                                f"MediaPipe coefficients (schema.MP_BLENDSHAPE_NAMES), declared "
                                f"{self.inputs['blendshapes']}; set conditioner.inputs.blendshapes=52")
        if out_dim is not None:
            raise LipspaceError("conditioner 'blendshape_av': out_dim must be null; a projection would mix the lip "
                                "and expression regions that the renderer's region attention gates separately")
        unknown = sorted(set(upper_face) - set(MP_BLENDSHAPE_NAMES))
        if unknown or not upper_face:
            raise LipspaceError(f"conditioner 'blendshape_av': upper_face names {unknown or '(none)'} are not "
                                f"MediaPipe blendshapes; pick from schema.MP_BLENDSHAPE_NAMES")
        spec = self.add_audio_input("audio", audio or {"backend": "mel", "window": 16, "context": 8})
        self.window, self.context = spec.window, spec.context
        feat = self.inputs["audio"]
        self.audio_net = FrameAudioNet(feat, dim_aud) if spec.window == 1 else AudioNet(feat, spec.window, dim_aud)
        self.att_net = AudioAttNet(dim_aud, spec.context) if spec.context > 1 else None
        self.upper_face = tuple(upper_face)
        self.register_buffer("upper_idx", torch.tensor([MP_BLENDSHAPE_NAMES.index(n) for n in self.upper_face]),
                             persistent=False)
        self.blink_cols = [k for k, n in enumerate(self.upper_face) if n.startswith("eyeBlink")]
        self.exp_net = nn.Sequential(nn.Linear(len(self.upper_face), exp_hidden), nn.ReLU(True),
                                     nn.Linear(exp_hidden, exp_dim))
        self.dim_aud, self.exp_dim = dim_aud, exp_dim
        self.regions = {"lip": (slice(0, dim_aud), tuple(lip_classes)),
                        "exp": (slice(dim_aud, dim_aud + exp_dim), tuple(exp_classes))}
        self.blink_period_s = blink_period_s
        # the training clip's neutral upper face and blink depth (prepare); saved with the model
        self.register_buffer("neutral_upper", torch.zeros(len(self.upper_face)))
        self.register_buffer("blink_peak", torch.zeros(len(self.upper_face)))
        self.register_buffer("prepared", torch.tensor(False))

    @property
    def raw_dim(self) -> int:
        return self.dim_aud + self.exp_dim

    def prepare(self, clip, train_idx) -> None:
        """Neutral upper face (mean of the 7 coefficients) and blink depth (95th percentile) on training frames."""
        bs = np.asarray(clip.tracks["blendshapes"], np.float32)[np.asarray(train_idx)]
        upper = bs[:, self.upper_idx.cpu().numpy()]
        self.neutral_upper.copy_(torch.from_numpy(upper.mean(0)))
        self.blink_peak.copy_(torch.from_numpy(np.percentile(upper, 95, axis=0).astype(np.float32)))
        self.prepared.fill_(True)

    def can_drive_by_audio(self) -> bool:
        return True

    def upper_face_schedule(self, n_frames: int, fps: float = 25.0) -> torch.Tensor:
        """[n_frames, 7]: the neutral upper face with a blink every ``blink_period_s`` (first at half a period)."""
        if not bool(self.prepared):
            raise LipspaceError("conditioner 'blendshape_av' has no neutral upper face yet: it is computed by "
                                "prepare(clip, train_idx) (build_system calls it); load a trained run")
        out = self.neutral_upper.expand(n_frames, -1).clone()
        period = max(int(round(self.blink_period_s * fps)), len(BLINK_PROFILE) + 1)
        profile = torch.tensor(BLINK_PROFILE, dtype=out.dtype, device=out.device)
        for start in range(period // 2, n_frames, period):
            k = min(len(BLINK_PROFILE), n_frames - start)
            for col in self.blink_cols:
                lo, hi = self.neutral_upper[col], torch.maximum(self.blink_peak[col], self.neutral_upper[col])
                out[start:start + k, col] = lo + (hi - lo) * profile[:k]
        return out

    def prepare_sequence(self, inputs):
        if not self._drive_by_audio:
            return inputs
        bs = inputs["blendshapes"].clone()
        bs[:, self.upper_idx] = self.upper_face_schedule(bs.shape[0]).to(bs)
        return {**inputs, "blendshapes": bs}

    def lip_code(self, a: torch.Tensor) -> torch.Tensor:
        want = (self.context, self.window) if self.context > 1 else (self.window,)
        if a.dim() != 2 + len(want) or tuple(a.shape[1:-1]) != want:
            raise LipspaceError(f"conditioner 'blendshape_av': audio input must be [F, {', '.join(map(str, want))}, "
                                f"dim], got {tuple(a.shape)}; the data module's audio settings differ from the "
                                f"conditioner's")
        if self.context == 1:
            return self.audio_net(a)
        f = a.shape[0]
        codes = self.audio_net(a.reshape(f * self.context, self.window, -1)).view(f, self.context, -1)
        return self.att_net(codes)

    def encode(self, inputs, frame_idx):
        exp = self.exp_net(inputs["blendshapes"][:, self.upper_idx])
        return torch.cat([self.lip_code(inputs["audio"]), exp], dim=-1)
