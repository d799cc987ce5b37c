"""The evaluation protocol of the locally trained audio-visual sync encoder (AVE), and its chance check.

Accuracy (:func:`evaluate_sync`) on a clip (or frame range) never seen in training; every usable frame t (its
5-frame window inside the clip and valid) gives one positive (audio t, mouth t) and one negative (audio t+s,
mouth t), s uniform over 5 <= |s| <= 15 with the shifted window also usable; the score is the cosine of the two
embeddings:

- ``binary_acc``: fraction of the 2 x frames decisions ``score > threshold`` that are right, the threshold chosen
  (balanced accuracy) on the TRAINING clips under the same protocol; ``binary_acc_oracle``: best threshold on the
  clip itself (an upper bound, for reference). Chance is 0.5 (half the pairs are aligned).
- ``binary_acc_smooth15`` / ``binary_acc_oracle_smooth15``: the same with every score averaged over the 15 frames
  t-7 ... t+7 at the same shift (SyncNet-style averaging over a 0.6 s segment; thresholds also from training).
- ``binary_acc_rel`` / ``binary_acc_rel_smooth15``: the same with relative scores: each score minus the mean
  score of that mouth window against the audio windows at every shift in [-15, 15] (SyncNet's confidence idea,
  label-free; removes a window's own score level, e.g. a closed mouth that matches everything a little).
- ``rank_acc``: fraction of frames t (t-15 ... t+15 usable) where the aligned score beats every score with
  5 <= |s| <= 15; ``rank_acc_strict`` beats every s != 0 in [-15, 15] (shifts of 1-4 frames overlap the window).
- ``offset``: the shift s in [-15, 15] whose score averaged over the clip is highest (0 = in sync), SyncNet-style.

:func:`chance_check` turns ``binary_acc`` into the "did it learn" verdict the automatic training stage
(``lipspace.av.auto``) logs and stores.
"""

from __future__ import annotations

import numpy as np
import torch

from lipspace.av import data as avd
from lipspace.av.sync import AVEncoder
from lipspace.utils.errors import LipspaceError

CHANCE = 0.5  # binary decision over balanced aligned / shifted pairs
CHANCE_P = 0.01  # one-sided binomial p-value below which an accuracy counts as above chance


def as_clip(c, config) -> avd.SyncClip:
    """A SyncClip as is, or a dataset directory (PATH[@DELAY_S]) loaded with the model's crop size and lifter."""
    if isinstance(c, avd.SyncClip):
        return c
    return avd.load_sync_clip(c, tuple(config["crop_hw"]), lifter=config.get("lifter", 0))


@torch.no_grad()
def clip_embeddings(model: AVEncoder, clip: avd.SyncClip, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio [N, d], mouth [N, d]) L2-normalised embeddings of every frame (mouth rows of frames that are not
    window centres are zero)."""
    was = model.training
    model.eval()
    a = torch.cat([model.audio(torch.from_numpy(clip.audio[i:i + chunk])) for i in range(0, clip.n_frames, chunk)])
    v = torch.zeros_like(a)
    cs = clip.centres
    for i in range(0, len(cs), chunk):
        t = cs[i:i + chunk]
        v[t] = model.mouth(torch.from_numpy(np.ascontiguousarray(avd.centre_crop(clip.video(t)))))
    model.train(was)
    return torch.nn.functional.normalize(a, dim=1, eps=1e-8), torch.nn.functional.normalize(v, dim=1, eps=1e-8)


def pair_scores(a: torch.Tensor, v: torch.Tensor, centres: np.ndarray, rng: np.random.Generator,
                min_shift: int = 5, max_shift: int = 15, smooth: int = 1, relative: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """(pos, neg) cosine scores, one of each per frame t: pos = score(audio t, mouth t), neg = score(audio t+s,
    mouth t) with s uniform over ``min_shift <= |s| <= max_shift`` among the shifts keeping every window inside
    the clip. With ``smooth`` = k > 1 each score is averaged over frames t-k//2 ... t+k//2 at the same shift
    (SyncNet-style temporal averaging of a k-frame segment); only frames whose whole segment is usable count.
    With ``relative``, every score(audio u+s, mouth u) has the mean of score(audio u+s', mouth u) over
    s' in [-max_shift, max_shift] subtracted (SyncNet's confidence idea: the mouth window's own score level over
    nearby audio is removed; label-free), and only frames with that whole context usable count."""
    a, v = a.numpy(), v.numpy()
    ok = np.zeros(len(a) + 4 * max_shift + smooth + 2, bool)
    ok[centres] = True
    h = smooth // 2
    off = np.arange(-h, h + 1)
    ctx = np.arange(-max_shift, max_shift + 1)
    base = np.zeros(len(a))
    if relative:
        keep = np.array([t >= max_shift and ok[t + ctx].all() for t in range(len(a))])
        idx = np.flatnonzero(keep)
        base[idx] = np.stack([(a[idx + c] * v[idx]).sum(1) for c in ctx], 1).mean(1)
        ok[:len(a)] &= keep
    ts = np.array([t for t in centres if t - h >= 0 and ok[t + off].all()], np.int64)
    shifts = np.concatenate([np.arange(-max_shift, -min_shift + 1), np.arange(min_shift, max_shift + 1)])
    pos, neg = [], []
    for t in ts:
        u = t + off
        good = [sh for sh in shifts if u[0] + sh >= 0 and ok[u + sh].all()]
        if not good:
            continue
        sh = rng.choice(good)
        pos.append(float(((a[u] * v[u]).sum(1) - base[u]).mean()))
        neg.append(float(((a[u + sh] * v[u]).sum(1) - base[u]).mean()))
    if not pos:
        raise LipspaceError(f"no {smooth}-frame segment with a partner shifted by >= {min_shift} frames: "
                            f"the clip is too short")
    return np.array(pos), np.array(neg)


def best_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising balanced accuracy of ``score > threshold``."""
    s = np.sort(np.concatenate([pos, neg]))
    cand = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    accs = [((pos > t).mean() + (neg <= t).mean()) / 2 for t in cand]
    k = int(np.argmax(accs))
    return float(cand[k]), float(accs[k])


def evaluate_sync(model: AVEncoder, root, threshold: float | dict | None = None, seed: int = 0, min_shift: int = 5,
                  max_shift: int = 15, smooth: int = 15) -> dict:
    """Sync metrics of ``model`` on one dataset (see the module docstring for definitions). ``threshold``: one
    value (per-window protocol) or {protocol: thr} as returned by :func:`train_thresholds`."""
    clip = as_clip(root, model.config)
    a, v = clip_embeddings(model, clip)
    out = {"clip": clip.name, "n_windows": int(len(clip.centres))}
    thresholds = threshold if isinstance(threshold, dict) else {"window": threshold}
    for name, k, rel in protocols(smooth):
        try:
            pos, neg = pair_scores(a, v, clip.centres, np.random.default_rng(seed), min_shift, max_shift, k, rel)
        except LipspaceError:
            if name == "window":
                raise
            continue  # a clip too short for 15-frame segments / the relative context: that protocol is absent
        thr_o, acc_o = best_threshold(pos, neg)
        sfx = PROTOCOL_SUFFIX[name]
        out.update({f"pos_mean{sfx}": float(pos.mean()), f"neg_mean{sfx}": float(neg.mean()),
                    f"n_pairs{sfx}": 2 * len(pos), f"binary_acc_oracle{sfx}": acc_o,
                    f"oracle_threshold{sfx}": thr_o})
        thr = thresholds.get(name)
        if thr is not None:
            out[f"threshold{sfx}"] = float(thr)
            out[f"binary_acc{sfx}"] = float(((pos > thr).sum() + (neg <= thr).sum()) / (len(pos) + len(neg)))
    # offset sweep
    ok = np.zeros(clip.n_frames + 2 * max_shift + 2, bool)
    ok[clip.centres] = True
    shifts = np.arange(-max_shift, max_shift + 1)
    full = np.array([t for t in clip.centres if t - max_shift >= 0 and ok[t + shifts].all()], np.int64)
    if len(full):
        S = np.stack([(a[full + s] * v[full]).sum(1).numpy() for s in shifts], 1)  # [F, 31]
        zero = max_shift
        far = np.abs(shifts) >= min_shift
        nz = shifts != 0
        out["rank_acc"] = float((S[:, zero] > S[:, far].max(1)).mean())
        out["rank_acc_strict"] = float((S[:, zero] > S[:, nz].max(1)).mean())
        out["n_rank_frames"] = int(len(full))
        mean = S.mean(0)
        out["offset"] = int(shifts[int(np.argmax(mean))])
        out["offset_curve"] = [round(float(x), 4) for x in mean]
    return out


PROTOCOL_SUFFIX = {"window": "", "smooth": "_smooth15", "rel": "_rel", "rel_smooth": "_rel_smooth15"}


def protocols(smooth: int = 15) -> list[tuple[str, int, bool]]:
    """(name, frames averaged, relative) of the four scoring protocols of :func:`evaluate_sync`."""
    return [("window", 1, False), ("smooth", smooth, False), ("rel", 1, True), ("rel_smooth", smooth, True)]


def train_thresholds(model: AVEncoder, clips, seed: int = 1, smooth: int = 15) -> tuple[dict, dict]:
    """({protocol: threshold}, {protocol: accuracy}): the score threshold maximising balanced accuracy on the
    (training) clips under each protocol of :func:`protocols` (a protocol no clip is long enough for is absent)."""
    clips = [as_clip(c, model.config) for c in clips]
    emb = [clip_embeddings(model, c) for c in clips]
    thrs, accs = {}, {}
    for name, k, rel in protocols(smooth):
        ps, ns = [], []
        for c, (a, v) in zip(clips, emb):
            try:
                p, n = pair_scores(a, v, c.centres, np.random.default_rng(seed), 5, 15, k, rel)
            except LipspaceError:  # too short for this protocol: the other clips decide its threshold
                continue
            ps.append(p), ns.append(n)
        if not ps:
            if name == "window":
                raise LipspaceError(f"no training clip is long enough to score windows shifted by >= 5 frames "
                                    f"({', '.join(c.name for c in clips)})")
            continue
        thrs[name], accs[name] = best_threshold(np.concatenate(ps), np.concatenate(ns))
    return thrs, accs


def chance_check(ev: dict, key: str = "binary_acc") -> dict:
    """Accuracy ``ev[key]`` of :func:`evaluate_sync` against chance (:data:`CHANCE`): {accuracy, chance, n_decisions,
    p_value (one-sided binomial test of the decisions against 0.5), beats_chance (accuracy > chance and p_value <
    :data:`CHANCE_P`)}. Decisions of overlapping windows are not independent, so the p-value is optimistic; the
    strict level (0.01) leaves room for that."""
    from scipy.stats import binom

    acc = ev.get(key)
    n = int(ev.get(f"n_pairs{key[len('binary_acc'):]}", 0)) if key.startswith("binary_acc") else 0
    if acc is None or n <= 0:
        return {"accuracy": None, "chance": CHANCE, "n_decisions": n, "p_value": None, "beats_chance": False}
    k = int(round(float(acc) * n))
    p = float(binom.sf(k - 1, n, CHANCE))
    return {"accuracy": float(acc), "chance": CHANCE, "n_decisions": n, "p_value": p,
            "beats_chance": bool(acc > CHANCE and p < CHANCE_P)}
