"""The render task: drive a trained model by a sequence (the held-out tail, a held-out utterance, another
dataset directory with the needed tracks, or a new audio file) and write a 25 fps mp4 with the driving audio."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lipspace.data.sampling import frame_inputs
from lipspace.utils.errors import LipspaceError
from lipspace.eval.video import to_uint8, write_video
from lipspace.model.inference import render_sequence
from lipspace.model.playback import frames_from_audio
from lipspace.model.postprocess import check_postprocess
from lipspace.model.runs import load_run

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


def render_from_audio(system, dm, wav: Path, out_path, seed: int = 0, postprocess: str = "none") -> Path:
    """``frames_from_audio`` written as an mp4 whose sound track is the driving audio as the model heard it (16 kHz
    mono: a 48 kHz or stereo file is converted, and a log line says so; silence is rendered, with a warning)."""
    import tempfile

    from lipspace.audio.inputs import load_driving_audio

    dub = load_driving_audio(wav)
    for note in filter(None, [*dub.notes, dub.short_note(), dub.speech_status]):
        log.warning("render: %s: %s", dub.path.name, note)
    frames, _, _ = frames_from_audio(system, dm, dub, seed, postprocess=postprocess)
    with tempfile.TemporaryDirectory(prefix="lipspace_render_") as tmp:
        return write_video(frames, Path(out_path), audio_path=dub.write(Path(tmp) / "audio.wav"))


def render(run_dir, driver: str = "heldout/utt_00", out: str | None = None, ckpt: str = "last",
           side_by_side: bool = False, postprocess: str = "none") -> Path:
    """``driver``: ``test_tail``, ``heldout/<name>`` (inside the training dataset) or a dataset directory path.
    Poses and background come from the driving sequence; conditions from its tracks (oracle in this version).
    ``postprocess`` (none, portrait_sync, inpaint_neck: ``lipspace.model.postprocess``): portrait_sync pastes the
    rendered face into the driving sequence's own frames (a wav: the playback frames of the training clip)."""
    postprocess = check_postprocess(postprocess, "postprocess")
    run_dir = Path(run_dir)
    cfg, dm, system, _ = load_run(run_dir, ckpt)
    clip = dm.clip
    if Path(driver).suffix.lower() in AUDIO_SUFFIXES:
        return render_from_audio(system, dm, Path(driver), out or run_dir / "render" / f"{Path(driver).stem}.mp4",
                                 seed=int(cfg.seed), postprocess=postprocess)
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
    for _, pred, target in render_sequence(system.conditioner, system.renderer, seq, inputs, fidx, indices=indices,
                                           postprocess=postprocess):
        img = to_uint8(pred)
        frames.append(np.concatenate([to_uint8(target), img], axis=1) if side_by_side else img)
    name = driver.replace("/", "_") if not Path(driver).is_dir() else Path(driver).name
    out_path = Path(out) if out else run_dir / "render" / f"{name}.mp4"
    return write_video(np.stack(frames), out_path, audio_path=seq.audio_path, audio_offset_s=offset)
