"""The render task: drive a trained model by a sequence (the held-out tail, a held-out utterance, another
dataset directory with the needed tracks, or a new audio file) and write a 25 fps mp4 with the driving audio."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lipspace.data.sampling import frame_inputs
from lipspace.errors import LipspaceError
from lipspace.eval.video import to_uint8, write_video
from lipspace.inference import render_sequence
from lipspace.tasks.evaluate import load_run

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


def pose_playback(indices: np.ndarray, n: int) -> np.ndarray:
    """n frame indices playing ``indices`` forwards then backwards (no jump at the turn), as many times as needed."""
    if len(indices) == 1:
        return np.repeat(indices, n)
    cycle = np.concatenate([indices, indices[-2:0:-1]])
    return cycle[np.arange(n) % len(cycle)]


def posed_playback(clip, indices: np.ndarray, poses):
    """A view of ``clip`` whose frame k has background / ground-truth torso of frame ``indices[k]`` and head pose
    ``poses[k]`` (generated head motion); frames are copied, so memory grows with the length."""
    import copy

    import torch

    view = copy.copy(clip)
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    view.frames, view.parsing, view.pose = clip.frames[idx], clip.parsing[idx], poses.to(clip.pose)
    view.meta = {**clip.meta, "n_frames": len(indices)}
    view.tracks = {}
    return view


def frames_from_audio(system, dm, wav: Path, seed: int = 0, downscale: int = 1, max_seconds: float | None = None):
    """Drive by a new audio file: audio inputs computed from the wav; head poses and background played back from
    the training clip's held-out tail (the whole clip when it has no tail); other inputs must be predictable from
    the audio (e.g. LipNeRF's audio -> expression regressor), otherwise this is a clear error. A conditioner with
    ``generate_motion`` (lipblink) generates the head poses from the audio (seeded, starting at the first playback
    pose) instead; background and ground-truth torso still come from the playback frames.

    Returns (uint8 frames [T,h,w,3] at 1/downscale, the clip frame index each one's background / pose came from,
    whether the poses were generated). ``max_seconds`` renders only the wav's first seconds. ``wav``: an audio
    file (any rate / channels: :func:`lipspace.audio.inputs.load_driving_audio`) or an already loaded
    :class:`~lipspace.audio.inputs.DrivingAudio`."""
    import torch

    from lipspace.audio.inputs import DrivingAudio, load_driving_audio, wav_track

    dub = wav if isinstance(wav, DrivingAudio) else load_driving_audio(wav)
    cond = system.conditioner
    fps = float(dm.clip.meta["fps"])
    n = dub.n_frames(fps)
    if n < 1:
        raise LipspaceError(f"{dub.path}: shorter than one video frame ({len(dub.audio) / dub.sample_rate * 1000:.0f}"
                            f" ms of audio, a frame is {1000 / fps:.0f} ms); pass a longer speech recording")
    if max_seconds is not None:
        n = min(n, max(1, int(round(max_seconds * fps))))
    pool = dm.split.test if len(dm.split.test) else np.arange(dm.clip.n_frames)
    indices = pose_playback(np.asarray(pool), n)
    frames, generated = [], hasattr(cond, "generate_motion")
    with cond.driving_by_audio():  # one clear error when this conditioner cannot be driven by audio alone
        inputs = {name: torch.as_tensor(wav_track(dub, n, spec, cond.inputs.get(name), f"conditioner '{cond.name}'"))
                  for name, spec in cond.audio_inputs.items()}
        for name in cond.inputs:  # placeholders the conditioner predicts from the audio (driving_by_audio)
            inputs.setdefault(name, torch.zeros(n, cond.inputs[name]))
        clip, order = dm.clip, indices
        if generated:
            poses, _ = cond.generate_motion(inputs[next(iter(cond.audio_inputs))], clip.pose[indices[0]], seed)
            clip, order = posed_playback(clip, indices, poses), np.arange(n)
        for _, pred, _ in render_sequence(cond, system.renderer, clip, inputs, None, indices=order,
                                          downscale=downscale):
            frames.append(to_uint8(pred))
    return np.stack(frames), indices, generated


def render_from_audio(system, dm, wav: Path, out_path, seed: int = 0) -> Path:
    """``frames_from_audio`` written as an mp4 whose sound track is the driving audio as the model heard it (16 kHz
    mono: a 48 kHz or stereo file is converted, and a log line says so; silence is rendered, with a warning)."""
    import tempfile

    from lipspace.audio.inputs import load_driving_audio

    dub = load_driving_audio(wav)
    for note in filter(None, [*dub.notes, dub.short_note(), dub.speech_status]):
        log.warning("render: %s: %s", dub.path.name, note)
    frames, _, _ = frames_from_audio(system, dm, dub, seed)
    with tempfile.TemporaryDirectory(prefix="lipspace_render_") as tmp:
        return write_video(frames, Path(out_path), audio_path=dub.write(Path(tmp) / "audio.wav"))


def render(run_dir, driver: str = "heldout/utt_00", out: str | None = None, ckpt: str = "last",
           side_by_side: bool = False) -> Path:
    """``driver``: ``test_tail``, ``heldout/<name>`` (inside the training dataset) or a dataset directory path.
    Poses and background come from the driving sequence; conditions from its tracks (oracle in this version)."""
    run_dir = Path(run_dir)
    cfg, dm, system, _ = load_run(run_dir, ckpt)
    clip = dm.clip
    if Path(driver).suffix.lower() in AUDIO_SUFFIXES:
        return render_from_audio(system, dm, Path(driver), out or run_dir / "render" / f"{Path(driver).stem}.mp4",
                                 seed=int(cfg.seed))
    offset = 0.0
    if driver == "test_tail":
        seq, indices, fidx = clip, dm.split.test, dm.split.test
        if len(indices) == 0:
            raise LipspaceError(f"{clip.root}: the held-out tail is empty (data.test_fraction=0); pick another driver.")
        offset = indices[0] / clip.meta["fps"]
    else:
        path = clip.root / driver if driver.startswith("heldout/") else Path(driver)
        if not (path / "meta.json").is_file():
            options = ["test_tail"] + [f"heldout/{n}" for n in clip.meta.get("heldout", [])]
            raise LipspaceError(f"{path}: not a dataset directory. driver must be one of {options} or a path to a "
                                "dataset directory written by lipspace-prep / lipspace-synth.")
        seq = clip.load_sibling(path)
        indices, fidx = np.arange(seq.n_frames), None
    inputs = frame_inputs(seq, indices, dm.inputs)
    frames = []
    for _, pred, target in render_sequence(system.conditioner, system.renderer, seq, inputs, fidx, indices=indices):
        img = to_uint8(pred)
        frames.append(np.concatenate([to_uint8(target), img], axis=1) if side_by_side else img)
    name = driver.replace("/", "_") if not Path(driver).is_dir() else Path(driver).name
    out_path = Path(out) if out else run_dir / "render" / f"{name}.mp4"
    return write_video(np.stack(frames), out_path, audio_path=seq.audio_path, audio_offset_s=offset)
