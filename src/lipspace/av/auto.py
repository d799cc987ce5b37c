"""The local sync expert trains itself: the automatic stage that trains an AVE on a run's training frames.

Used when no checkpoint is given (which checkpoint a run uses, and the record of it: ``lipspace.av.record``, whose
``resolve_audio_inputs`` / ``expert_for_metric`` call :func:`ensure_expert`).

What it trains on (:func:`training_sources`): the run's clip's TRAINING frames only (``lipspace.data.clip.
split_frames``: the first ``clip_seconds`` before the held-out tail; the tail is never seen), plus the whole of
every dataset listed in ``ave.pools`` (``PATH`` or ``PATH@AUDIO_DELAY_S``). Trainer: ``lipspace.av.train.fit``
with the settings of ``conf/ave/auto.yaml`` (:class:`AutoSettings`).

Proof that it learned: after training, :func:`lipspace.av.evaluate.evaluate_sync` on the clip's held-out tail
(thresholds from the training frames), ``binary_acc`` against chance (0.5) with a one-sided binomial test
(:func:`lipspace.av.evaluate.chance_check`); logged, stored in the checkpoint's metrics, and a WARNING when it does
not beat chance (or when the tail is too short to tell).

Cache (:func:`ensure_expert`): ``$LIPSPACE_CACHE/ave_auto/<clip>-<key>.pt`` (+ a ``.json`` with the same metadata),
``key`` = sha256 of the data (per source: dataset path, frame range, audio delay, sha256 of tracks.npz and
audio.wav, the frame files' sizes and times), the training settings, the trainer's code (sha256 of
``lipspace/av/{sync,data,train}.py``) and :data:`STAGE_VERSION`. A second run with the same data and settings
loads it; a file lock makes concurrent runs (sweep jobs, DDP ranks) train it once. Checkpoints record the clips
they saw (``provenance['train_frames']``: dataset path + frame range; read by ``lipspace.av.record.seen_by``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)

STAGE_VERSION = 1
SUBDIR = "ave_auto"  # in the project cache


@dataclass(frozen=True)
class AutoSettings:
    """Training settings of the automatic stage (``conf/ave/auto.yaml``; every field but ``pools`` and ``threads``
    is part of the cache key, ``pools`` enters it through the data)."""

    steps: int = 600
    max_epochs: float = 30.0  # fewer steps on little data: at most this many passes over its aligned windows
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    dim: int = 256  # the ave backend's feature width (what conditioner.inputs.audio: auto becomes)
    width: int = 16
    crop_hw: tuple[int, int] = (32, 64)
    augment: float = 1.0
    recon_weight: float = 0.5
    weight_decay: float = 1e-2
    lifter: int = 0
    nce_weight: float = 1.0  # the in-batch contrastive term: without it 500 steps stayed at chance
    pools: tuple[str, ...] = ()
    threads: int | None = 1  # torch threads while training (None: as the process has them); see conf/ave/auto.yaml

    @classmethod
    def of(cls, node) -> "AutoSettings":
        if node is None:
            return cls()
        if isinstance(node, AutoSettings):
            return node
        d = dict(node)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise LipspaceError(f"ave settings {unknown} are unknown; use "
                                f"{', '.join(f.name for f in dataclasses.fields(cls))} (conf/ave/auto.yaml)")
        if "crop_hw" in d:
            d["crop_hw"] = tuple(int(x) for x in d["crop_hw"])
        d["pools"] = tuple(str(p) for p in (d.get("pools") or ()))
        out = cls(**d)
        if out.steps < 1 or out.batch < 2 or out.dim < 1 or out.width < 1:
            raise LipspaceError(f"ave.steps={out.steps}, ave.batch={out.batch}, ave.dim={out.dim}, "
                                f"ave.width={out.width}: steps, dim and width must be >= 1 and batch >= 2")
        return out

    def training(self) -> dict:
        """The settings that change the weights (cache key and checkpoint metadata)."""
        d = dataclasses.asdict(self)
        d.pop("pools"), d.pop("threads")
        d["crop_hw"] = list(self.crop_hw)
        return d


@dataclass(frozen=True)
class Source:
    """Frames [start, stop) of a dataset directory, its audio ``audio_delay_s`` late (corrected when cutting)."""

    root: Path
    start: int
    stop: int
    audio_delay_s: float = 0.0

    def as_dict(self) -> dict:
        return {"root": str(self.root), "start": int(self.start), "stop": int(self.stop),
                "audio_delay_s": float(self.audio_delay_s)}

    def signature(self) -> dict:
        """What the cache key sees of this source: its place, range and the files it is read from."""
        from lipspace.utils.assets import file_sha256
        from lipspace.av.data import frames_signature

        return {**self.as_dict(), "tracks_sha256": file_sha256(self.root / "tracks.npz"),
                "audio_sha256": file_sha256(self.root / "audio.wav"),
                "frames": frames_signature(self.root, self.start, self.stop)}


def _n_frames(root: Path) -> int:
    from lipspace.data.schema import validate_dataset

    return int(validate_dataset(root, check_images=False)["n_frames"])


def training_sources(clip, split, pools=()) -> tuple[list[Source], Source | None]:
    """(training sources, held-out tail or None) of a loaded clip and its split: the clip's training frames
    [0, last training frame + 1) (invalid frames inside are skipped by the window sampler, as by the NeRF), then
    each pool dataset whole; the tail [first held-out frame, last + 1)."""
    from lipspace.av.data import parse_root

    root = Path(clip.root).resolve()
    train = [Source(root, 0, int(split.train.max()) + 1)]
    for spec in pools:
        p, delay = parse_root(spec)
        p = p.expanduser().resolve()
        if not (p / "meta.json").is_file():
            raise LipspaceError(f"ave.pools: {p} is not a dataset directory (no meta.json); list datasets written "
                                f"by lipspace-prep, as PATH or PATH@AUDIO_DELAY_S")
        if p == root:
            raise LipspaceError(f"ave.pools lists the run's own dataset {p}: its training frames are used already "
                                f"and its held-out tail must stay unseen; remove it from ave.pools")
        train.append(Source(p, 0, _n_frames(p), delay))
    test = split.test
    tail = Source(root, int(test.min()), int(test.max()) + 1) if len(test) else None
    return train, tail


def code_version() -> str:
    """sha256 (16 hex) of the trainer's source (model, windows, training loop) and :data:`STAGE_VERSION`."""
    h = hashlib.sha256(f"stage-v{STAGE_VERSION}".encode())
    here = Path(__file__).resolve().parent
    for name in ("sync.py", "data.py", "train.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def stage_key(sources: list[Source], settings: AutoSettings) -> str:
    payload = {"data": [s.signature() for s in sources], "settings": settings.training(), "code": code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def stage_path(sources: list[Source], settings: AutoSettings) -> Path:
    from lipspace.utils.assets import cache_dir

    return cache_dir() / SUBDIR / f"{sources[0].root.name}-{stage_key(sources, settings)}.pt"


def _locked(path: Path) -> FileLock:
    """An exclusive lock on ``path``.lock (concurrent runs wait for the one training)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def _describe(s: Source) -> str:
    return f"{s.root.name}[{s.start}:{s.stop}]" + (f"@{s.audio_delay_s:g}s" if s.audio_delay_s else "")


def train_expert(sources: list[Source], heldout: Source | None, settings: AutoSettings, out_path: Path,
                 key: str = "", say=None) -> dict:
    """Train an AVE on ``sources`` with ``fit``, evaluate it on ``heldout``, save it with its provenance and
    figures to ``out_path``; returns the checkpoint's metrics."""
    import torch

    from lipspace.av import data as avd
    from lipspace.av.evaluate import chance_check, evaluate_sync, train_thresholds
    from lipspace.av.sync import NOT_OFFICIAL, save
    from lipspace.av.train import fit, heldout_line

    say = say or log.info
    t0 = time.time()
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    try:
        clips = [avd.load_sync_clip(s.root, settings.crop_hw, audio_delay_s=s.audio_delay_s, lifter=settings.lifter,
                                    frames=(s.start, s.stop)) for s in sources]
        steps = effective_steps(settings, sum(len(c.centres) for c in clips))
        say(f"[ave-auto] training a local sync expert on {', '.join(c.name for c in clips)} "
            f"({sum(len(c.centres) for c in clips)} windows, {steps} steps, crop {settings.crop_hw}); "
            f"data loaded in {time.time() - t0:.1f}s")
        t1 = time.time()
        model, history = fit(clips, steps, settings.seed, settings.batch, settings.lr,
                             settings.recon_weight, max(steps // 5, 1), settings.dim, settings.width,
                             settings.crop_hw, settings.augment, settings.weight_decay, settings.lifter,
                             settings.nce_weight, log=say)
        train_s = time.time() - t1
        thrs, train_accs = train_thresholds(model, clips, settings.seed + 1)
        metrics = {"steps": steps, "train_seconds": round(train_s, 1), "thresholds": thrs,
                   "threshold": thrs["window"], "train_binary_accs": train_accs,
                   "train_binary_acc": train_accs["window"], "history": history}
        tail_name = _describe(heldout) if heldout is not None else None
        if heldout is None:
            metrics["heldout_status"] = "not evaluated: the clip has no held-out tail (data.test_fraction=0)"
        else:
            try:
                tail = avd.load_sync_clip(heldout.root, settings.crop_hw, audio_delay_s=heldout.audio_delay_s,
                                          lifter=settings.lifter, frames=(heldout.start, heldout.stop))
                ev = evaluate_sync(model, tail, threshold=thrs, seed=settings.seed)
                metrics["heldout"] = {**ev, **heldout.as_dict()}
                metrics["chance"] = chance_check(ev)
                say(f"[ave-auto] HELD-OUT {tail.name}: {heldout_line(ev, thrs['window'])}")
                metrics["heldout_status"] = "ok"
            except LipspaceError as e:
                metrics["heldout_status"] = f"not evaluated: {e}"
        metrics["stage_seconds"] = round(time.time() - t0, 1)
        names = ", ".join(c.name for c in clips)
        prov = {"weights": f"lipspace AVE trained automatically (lipspace.av.auto) on {names} "
                           f"({steps} steps, seed {settings.seed}), {NOT_OFFICIAL}",
                "train_clips": [str(s.root) for s in sources],
                "train_frames": [s.as_dict() for s in sources],
                "eval_clip": tail_name, "eval_frames": heldout.as_dict() if heldout is not None else None,
                "stage": {"key": key, "settings": settings.training(), "code_version": code_version(),
                          "stage_version": STAGE_VERSION},
                "objective": "SyncNet BCE on ReLU-embedding cosine + L1 mouth reconstruction",
                "windows": {"video_frames": avd.VIDEO_FRAMES, "audio_mel_frames": avd.AUDIO_FRAMES,
                            "crop_hw": list(settings.crop_hw),
                            "mel": "lipspace.audio.features mel, standardised per clip (per frame range here)"}}
        save(model, out_path, prov, {k: v for k, v in metrics.items() if k != "history"})
        Path(str(out_path) + ".json").write_text(json.dumps({"provenance": prov, "metrics": metrics}, indent=1,
                                                            default=str))
    finally:
        torch.set_num_threads(threads)
    return metrics


def effective_steps(settings: AutoSettings, n_windows: int) -> int:
    """``settings.steps``, capped at ``max_epochs`` passes over ``n_windows`` aligned windows (``batch / 2`` per
    step), at least 10: a few seconds of data need no 500 steps."""
    cap = math.ceil(settings.max_epochs * n_windows / max(settings.batch // 2, 1))
    return int(min(settings.steps, max(cap, 10)))


def verdict(metrics: dict) -> tuple[bool, str]:
    """(learned, one line): the held-out accuracy against chance, from a checkpoint's metrics."""
    ch = metrics.get("chance")
    if not ch or ch.get("accuracy") is None:
        return False, (f"held-out accuracy unknown ({metrics.get('heldout_status', 'not evaluated')}): nothing shows "
                       f"that this sync expert learned anything")
    line = (f"held-out binary accuracy {ch['accuracy']:.3f} vs chance {ch['chance']:.2f} ({ch['n_decisions']} "
            f"decisions, one-sided binomial p = {ch['p_value']:.2g})")
    return bool(ch["beats_chance"]), line


def ensure_expert(sources: list[Source], heldout: Source | None, settings: AutoSettings | None = None,
                  say=None) -> dict:
    """The cached stage: the checkpoint for these sources and settings, trained now unless cached. Returns a
    record {path, sha256, source: 'auto', key, trained (now), learned, verdict, heldout figures, train_frames}."""
    import torch

    from lipspace.utils.assets import file_sha256

    settings = AutoSettings.of(settings)
    say = say or log.info
    key = stage_key(sources, settings)
    path = stage_path(sources, settings)
    trained = False
    with _locked(path):
        if path.is_file():
            try:
                ck = torch.load(path, map_location="cpu", weights_only=True)
                metrics = dict(ck.get("metrics", {}))
            except Exception as e:  # a truncated / foreign file: retrain over it
                log.warning("[ave-auto] %s unreadable (%s): training again", path, " ".join(str(e).split())[:120])
                metrics = None
            if metrics is not None:
                say(f"[ave-auto] reusing the local sync expert {path} (trained in "
                    f"{metrics.get('stage_seconds', '?')}s)")
        else:
            metrics = None
        if metrics is None:
            try:
                metrics = train_expert(sources, heldout, settings, path, key, say)
            except LipspaceError as e:
                raise LipspaceError(f"the local sync expert (lipspace.av.auto) could not be trained on "
                                    f"{', '.join(map(_describe, sources))}: {e}; give AVE weights instead "
                                    f"($LIPSPACE_AVE_WEIGHTS or conditioner.audio.backend_kwargs.weights)") from None
            trained = True
            say(f"[ave-auto] local sync expert -> {path} (stage {metrics['stage_seconds']}s)")
    learned, line = verdict(metrics)
    if learned:
        say(f"[ave-auto] {line}: above chance")
    else:
        log.warning("[ave-auto] THE LOCAL SYNC EXPERT DOES NOT BEAT CHANCE: %s. Its features and the lse_*_local "
                    "columns carry little or no sync information; give it more steps (ave.steps), more data "
                    "(ave.pools, data.clip_seconds) or real weights ($LIPSPACE_AVE_WEIGHTS). Checkpoint: %s",
                    line, path)
    return {"path": str(path), "sha256": file_sha256(path), "source": "auto", "key": key, "trained": trained,
            "learned": learned, "verdict": line, "chance": metrics.get("chance"),
            "heldout_status": metrics.get("heldout_status"), "stage_seconds": metrics.get("stage_seconds"),
            "train_frames": [s.as_dict() for s in sources]}
