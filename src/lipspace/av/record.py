"""What a run uses as its AVE checkpoint, and the record of it: given weights, else the automatic stage.

Who asks: the ``ave`` audio backend (``experiment=synctalk``; :func:`resolve_audio_inputs`, called by
``lipspace.model.build.build_system``) and the local LSE columns of the evaluation (:func:`expert_for_metric`,
called by ``lipspace.tasks.evaluate``). A checkpoint counts as given when it is named (the backend's
``weights`` / ``evaluation.metrics.ave_weights``), in ``$LIPSPACE_AVE_WEIGHTS``, or present at
``$LIPSPACE_CACHE/ave_local.pt`` (what ``python -m lipspace.av.train`` writes by default); those always win.
Otherwise the automatic stage (``lipspace.av.auto.ensure_expert``) trains one on the run's training frames.

The run records what it used (:data:`RECORD`, ``<run>/ave_local.json``: path, sha256, source, held-out figures)
and the evaluation reads that record instead of re-deriving the checkpoint, so held-out utterances and dubbed
audio are featurised with the same weights as training. Checkpoints record the clips they saw
(``provenance['train_frames']``: dataset path + frame range); :func:`seen_by` tells the evaluation whether a
scored sequence was among them (``lse_local_seen``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lipspace.av.auto import AutoSettings, ensure_expert, training_sources
from lipspace.utils.errors import LipspaceError

RECORD = "ave_local.json"  # in the run directory: {who: {path, sha256, source, ...}}


def given_weights(weights=None) -> tuple[Path, str] | None:
    """(path, source) of a checkpoint the user gave: ``weights`` ('weights'), ``$LIPSPACE_AVE_WEIGHTS`` ('env') or
    the default file ('default') when it exists; None when none is given (then the stage trains one). A named
    path that is not a file is returned as well (the backend / metric then say so)."""
    from lipspace.av.backend import AVE_WEIGHTS_ENV, default_ave_weights

    if weights:
        return Path(weights).expanduser(), "weights"
    if os.environ.get(AVE_WEIGHTS_ENV):
        return Path(os.environ[AVE_WEIGHTS_ENV]).expanduser(), "env"
    default = default_ave_weights()
    return (default, "default") if default.is_file() else None


def read_record(run_dir) -> dict:
    p = Path(run_dir) / RECORD
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise LipspaceError(f"{p}: unreadable ({e}); delete it to let the run resolve its AVE again") from None


def write_record(run_dir, who: str, rec: dict) -> None:
    p = Path(run_dir) / RECORD
    data = read_record(run_dir)
    data[who] = rec
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, p)


def checked(rec: dict, where: str) -> Path:
    """The recorded checkpoint's path, after checking that it still exists and has the recorded sha256."""
    from lipspace.utils.assets import file_sha256

    p = Path(rec["path"])
    if not p.is_file():
        raise LipspaceError(f"{where}: the AVE checkpoint this run used, {p} (sha256 {rec.get('sha256')}), is gone; "
                            f"restore it, or point conditioner.audio.backend_kwargs.weights at a copy")
    found = file_sha256(p)
    if rec.get("sha256") and found != rec["sha256"]:
        raise LipspaceError(f"{where}: {p} has sha256 {found}, but the run used {rec['sha256']}: the file was "
                            f"replaced; restore the run's checkpoint (features would not match its training)")
    return p


def _given_record(path: Path, source: str) -> dict:
    from lipspace.utils.assets import file_sha256

    return {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None, "source": source}


def resolve_audio_inputs(audio_inputs: dict, datamodule, ave_cfg=None, run_dir=None, use_record: bool = False
                         ) -> dict:
    """``audio_inputs`` (name -> AudioInput) with every ``ave`` input's weights made explicit: a given checkpoint
    (:func:`given_weights`), else the automatic stage on the datamodule's training frames (+ ``ave.pools``).
    ``use_record`` (evaluation, rendering): the checkpoint recorded in ``run_dir`` wins (sha256-checked). With a
    ``run_dir``, what was used is recorded there (:data:`RECORD`)."""
    from lipspace.audio.inputs import AudioInput

    out = {}
    record = read_record(run_dir) if run_dir is not None and use_record else {}
    for name, spec in (audio_inputs or {}).items():
        spec = AudioInput.of(spec)
        if spec.backend != "ave":
            out[name] = spec
            continue
        if name in record:
            path, rec = checked(record[name], str(Path(run_dir) / RECORD)), None
        else:
            given = given_weights(spec.backend_kwargs.get("weights"))
            if given is not None:
                path, rec = given[0], _given_record(*given)
            else:
                dm = datamodule.load()
                settings = AutoSettings.of(ave_cfg)
                train, tail = training_sources(dm.clip, dm.split, settings.pools)
                rec = ensure_expert(train, tail, settings)
                path = Path(rec["path"])
            if run_dir is not None and rec is not None and rec.get("sha256"):
                write_record(run_dir, name, rec)
        out[name] = dataclasses.replace(spec, backend_kwargs={**spec.backend_kwargs, "weights": str(path)})
    return out


def expert_for_metric(datamodule, ave_cfg=None, run_dir=None) -> Path | None:
    """The checkpoint of the local LSE columns when ``evaluation.metrics.ave_weights`` is not set: None when one is
    given otherwise ($LIPSPACE_AVE_WEIGHTS, the default file: ``lse_local`` finds those itself); else the run's
    recorded expert (its own ``lse_local`` entry, or the auto-trained one its ``ave`` features used: the same
    training frames), else the automatic stage on the run's clip's training frames (recorded for next time)."""
    if given_weights() is not None:
        return None
    record = read_record(run_dir) if run_dir is not None else {}
    where = str(Path(run_dir or ".") / RECORD)
    if "lse_local" in record:
        return checked(record["lse_local"], where)
    for rec in record.values():
        if isinstance(rec, dict) and rec.get("source") == "auto":
            return checked(rec, where)
    dm = datamodule.load()
    settings = AutoSettings.of(ave_cfg)
    train, tail = training_sources(dm.clip, dm.split, settings.pools)
    rec = ensure_expert(train, tail, settings)
    if run_dir is not None:
        write_record(run_dir, "lse_local", rec)
    return Path(rec["path"])


def seen_by(provenance: dict, audio_path, offset_s: float, n_frames: int, fps: float = 25.0) -> bool | None:
    """Whether a scored sequence (the dataset audio ``audio_path`` from ``offset_s``, ``n_frames`` frames) was among
    an AVE's training data: True when its dataset and frames overlap a recorded training range (then its local
    LSE is optimistic), False when not, None when the checkpoint does not record what it saw. A sequence whose
    audio is not a dataset's audio.wav (a dubbed file) is False."""
    from lipspace.av.data import parse_root

    ranges = provenance.get("train_frames")
    if ranges is None:
        clips = provenance.get("train_clips")
        if not clips:
            return None
        ranges = [{"root": str(parse_root(c)[0]), "start": 0, "stop": None} for c in clips]
    audio = Path(audio_path).expanduser()
    if audio.name != "audio.wav":
        return False
    root = audio.resolve().parent
    lo = int(round(max(offset_s, 0.0) * fps))
    hi = lo + int(n_frames)
    for r in ranges:
        try:
            same = Path(r["root"]).expanduser().resolve() == root
        except (OSError, KeyError, TypeError):
            continue
        stop = r.get("stop")
        if same and lo < (stop if stop is not None else hi + 1) and hi > int(r.get("start", 0)):
            return True
    return False


def scorer_is_encoder(run_dir, metric_weights) -> bool:
    """Whether the expert behind the local LSE columns (``metric_weights``; None: the given default) is also this
    run's audio encoder (a run with ``ave`` features, e.g. experiment=synctalk): its renders are then scored by the
    network whose embeddings drive them, and the local LSE favours it (read its lse_*_local as optimistic)."""
    if metric_weights is None:
        given = given_weights()
        metric_weights = given[0] if given is not None else None
    if metric_weights is None:
        return False
    target = Path(metric_weights).expanduser().resolve()
    return any(isinstance(rec, dict) and rec.get("path") and Path(rec["path"]).expanduser().resolve() == target
               for who, rec in read_record(run_dir).items() if who != "lse_local")
