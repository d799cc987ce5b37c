"""The main demo: the four conditioning spaces compared on the embedded synthetic talking head.

One preset per space (lipnerf: expression, adnerf: deepspeech-style audio, dfanerf: lip/blink, synctalk: blendshapes
+ audio-visual encoder), all on the tri-plane renderer at one equal budget; each is evaluated on the held-out
utterances driven by its audio alone (exact ground truth: the generator rendered them) and on one synthetic dub (a
voice the model never heard, lip-sync columns only). Prints one row per space, writes a bar chart and one mp4 with
the ground truth and the four spaces side by side. A second run reuses every finished run and evaluation."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lipspace.utils.errors import LipspaceError

SPACES = {"expression": "lipnerf", "deepspeech": "adnerf", "lipblink": "dfanerf", "blendshape_av": "synctalk"}
STEPS = 800  # the equal training budget (tri-plane, budget=tiny); see README "What the demo does" for its timing
# torso=gt: every space over the same (ground-truth) torso, whatever its preset's own torso option
COMMON = ["renderer=triplane", "torso=gt", "budget=tiny", f"trainer.max_steps={STEPS}", "study=demo",
          "trainer.enable_progress_bar=false", "evaluation.max_tail_frames=0", "evaluation.oracle=false",
          "evaluation.videos=true", "evaluation.dub_seconds=4.0"]
# the comparison's columns: {results column: printed header}; held-out = audio-driven held-out utterances
COLUMNS = {"psnr": "PSNR", "mouth_psnr": "mouth PSNR", "lmd": "LMD", "lip_open_corr": "lip-open r",
           "lse_c_local": "LSE-C loc", "lse_c_local_dub": "LSE-C loc (dub)", "lse_c": "LSE-C",
           "lip_audio_corr_dub": "lip-audio r (dub)", "train_s": "train s"}


class Progress:
    """Numbered stage lines with their wall times: ``with progress("train lipnerf"): ...``."""

    def __init__(self, n: int):
        self.n, self.i, self.times = n, 0, {}

    def __call__(self, name: str, detail: str = ""):
        """A stage keyed ``name`` in ``times``; ``detail`` is only printed."""
        self.i += 1
        return _Stage(self, name, detail)


class _Stage:
    def __init__(self, progress: Progress, name: str, detail: str):
        self.p, self.name, self.detail = progress, name, detail

    def __enter__(self):
        print(f"[{self.p.i}/{self.p.n}] {self.name}{self.detail} ...", flush=True)
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t
        self.p.times[self.name] = dt
        if exc[0] is None:
            print(f"[{self.p.i}/{self.p.n}] {self.name}: done in {dt:.1f} s", flush=True)


def run_key(overrides: list[str]) -> str:
    """Folder suffix for a run with extra overrides (none: no suffix), so changed settings never resume a run made
    with others."""
    return "" if not overrides else "-" + hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]


def _record(run: Path, overrides: list[str]) -> dict:
    """The run's demo record (training / evaluation wall times) when it was made with ``overrides``, else {}."""
    rec = run / "demo.json"
    info = json.loads(rec.read_text()) if rec.is_file() else {}
    return info if info.get("overrides") == overrides else {}


def _finished(run: Path, overrides: list[str]) -> dict | None:
    """The run's demo record when it holds a finished training and evaluation made with ``overrides``."""
    info = _record(run, overrides)
    return info if "eval_wall_s" in info and (run / "eval" / "results.csv").is_file() else None


def train_and_evaluate(space: str, overrides: list[str], run: Path, progress: Progress) -> tuple[pd.DataFrame, dict]:
    """Train (resuming an interrupted run) and evaluate one preset, or reuse a finished training / evaluation."""
    from lipspace.utils.config import choices_from_overrides, compose_train
    from lipspace.tasks.evaluate import evaluate_run
    from lipspace.tasks.train import train

    preset = f"{SPACES[space]} ({space})"
    done = _finished(run, overrides)
    if done is not None:
        progress.i += 2
        print(f"[{progress.i}/{progress.n}] {preset}: reusing the finished run {run}", flush=True)
        return pd.read_csv(run / "eval" / "results.csv"), done
    cfg = compose_train(overrides, run)
    info = _record(run, overrides)
    if "train_wall_s" in info and (run / "checkpoints" / "last.ckpt").is_file():
        progress.i += 1
        print(f"[{progress.i}/{progress.n}] {preset}: reusing the trained checkpoint of {run}", flush=True)
    else:
        with progress(f"train {SPACES[space]}", f" ({space}), {cfg.trainer.max_steps} steps") as st:
            train(cfg, run, choices_from_overrides(overrides))
        info = {"overrides": overrides, "train_wall_s": progress.times[st.name]}
        (run / "demo.json").write_text(json.dumps(info, indent=2))
    with progress(f"evaluate {SPACES[space]}", f" ({space})") as st:
        df = evaluate_run(run, cfg.evaluation)
    info["eval_wall_s"] = progress.times[st.name]
    (run / "demo.json").write_text(json.dumps(info, indent=2))
    return df, info


def summarise(space: str, preset: str, df: pd.DataFrame, info: dict) -> dict:
    """One comparison row: held-out utterances driven by audio (mean over utterances) + the dub's sync columns."""
    held = df[df["eval_set"].astype(str).str.startswith("heldout/")]
    dub = df[df["eval_set"].astype(str).str.startswith("dub/")]
    row = {"space": space, "preset": preset, "train_s": info.get("train_wall_s", np.nan)}
    for col in ("psnr", "mouth_psnr", "lmd", "lip_open_corr", "lse_c_local", "lse_d_local", "lse_c", "lse_d",
                "baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr", "n_frames", "lse_c_local_gt",
                "lse_d_local_gt", "lse_c_gt", "lse_d_gt"):
        vals = pd.to_numeric(held[col], errors="coerce") if col in held else pd.Series(dtype=float)
        row[col] = float(vals.sum() if col == "n_frames" else vals.mean()) if len(vals) else np.nan
    for col in ("lse_c_local", "lse_d_local", "lse_c", "lip_audio_corr"):
        vals = pd.to_numeric(dub[col], errors="coerce") if col in dub else pd.Series(dtype=float)
        row[f"{col}_dub"] = float(vals.mean()) if len(vals) else np.nan
    for col in ("lse_status", "lse_local_status"):
        row[col] = str(df[col].dropna().iloc[0]) if col in df and df[col].notna().any() else ""
    row["lse_local_is_encoder"] = bool(df["lse_local_is_encoder"].fillna(False).astype(bool).any()) \
        if "lse_local_is_encoder" in df else False
    return row


def reference_rows(rows: list[dict]) -> list[dict]:
    """The still mean-training-frame baseline (PSNR floor) and the ground truth's own lip-sync scores (ceiling) on
    the same held-out utterances (every run scored both alike)."""
    first = rows[0]
    return [{"space": "still frame", "preset": "-", "psnr": first["baseline_mean_frame_psnr"],
             "mouth_psnr": first["baseline_mean_frame_mouth_psnr"]},
            {"space": "ground truth", "preset": "-", **{k: first.get(f"{k}_gt", np.nan)
                                                        for k in ("lse_c_local", "lse_d_local", "lse_c", "lse_d")}}]


def audio_video(df: pd.DataFrame, utterance: str) -> Path:
    """The eval video (ground truth | render) of ``utterance`` driven by audio, from a run's results rows."""
    rows = df[(df["eval_set"] == f"heldout/{utterance}") & (df["driver"] == "audio")]
    if rows.empty or "video" not in rows or not isinstance(rows["video"].iloc[0], str):
        raise LipspaceError(f"no audio-driven video of heldout/{utterance} in the run's results (evaluation.videos "
                            "must be true).")
    return Path(rows["video"].iloc[0])


def side_by_side(results: dict[str, pd.DataFrame], out: Path, utterance: str, audio: Path) -> Path:
    """One mp4: ground truth and every space's audio-driven render of ``utterance`` (from each run's eval video,
    whose left half is the ground truth), with the utterance's audio."""
    from lipspace.eval.montage import grid
    from lipspace.eval.video import read_video, write_video

    panels, labels = [], []
    for space, df in results.items():
        video = read_video(audio_video(df, utterance))
        w = video.shape[2] // 2
        if not panels:
            panels.append(video[:, :, :w])
            labels.append("ground truth")
        panels.append(video[:, :, w:])
        labels.append(space)
    return write_video(grid(panels, labels), out, audio_path=audio)


def print_table(table: pd.DataFrame) -> str:
    """The comparison as text; a space whose local LSE is scored by its own audio encoder is starred."""
    cols = ["space", "preset"] + [c for c in COLUMNS if c in table.columns]
    shown = table[cols].copy()
    if "lse_local_is_encoder" in table:
        starred = table["lse_local_is_encoder"].fillna(False).astype(bool)
        shown.loc[starred, "space"] = shown.loc[starred, "space"] + "*"
    shown = shown.rename(columns=COLUMNS)
    text = shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}")
    print(text)
    return text


def check_spaces(spaces) -> list[str]:
    unknown = [s for s in spaces if s not in SPACES]
    if unknown:
        raise LipspaceError(f"demo: unknown conditioning space(s) {unknown}; choose from {list(SPACES)}.")
    return list(spaces)
