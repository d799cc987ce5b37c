"""Command line of the AVE trainer: train on whole dataset directories, report held-out accuracy, save a checkpoint.

    python -m lipspace.av.cli --train /tmp/prep_anchor outputs/prep/macron@0.08 \
        --eval outputs/prep/obama@0.21 --steps 1500 --out ~/.cache/lipspace/ave_local.pt

(``python -m lipspace.av.train ...`` runs the same.) A dataset is given as PATH or PATH@DELAY_S: DELAY_S > 0 says
its audio is that many seconds late relative to its video and is corrected when windows are cut
(``lipspace.av.data.mel_windows``). ``--out`` defaults to ``$LIPSPACE_CACHE/ave_local.pt`` (``~/.cache/lipspace``
without it), the checkpoint the ``ave`` backend and the local LSE find without further settings. Without any
checkpoint, training runs and evaluations train one automatically on their clip's training frames
(``lipspace.av.auto``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lipspace.utils.errors import LipspaceError


def main(argv=None) -> int:
    from lipspace.av.backend import default_ave_weights
    from lipspace.av.train import train_ave

    ap = argparse.ArgumentParser(prog="python -m lipspace.av.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", nargs="+", required=True,
                    help="training dataset directories, each PATH or PATH@AUDIO_DELAY_S (audio that late vs video)")
    ap.add_argument("--eval", default=None, help="held-out dataset directory (not trained on), PATH[@DELAY_S]")
    ap.add_argument("--also-eval", nargs="*", default=[], help="more unseen clips to report, PATH[@DELAY_S]")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--recon-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0: crop jitter/flip only)")
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--width", type=int, default=32, help="channels of the first conv layer")
    ap.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="mouth crop height and width (default 48 96)")
    ap.add_argument("--nce-weight", type=float, default=0.0, help="weight of the in-batch contrastive term")
    ap.add_argument("--lifter", type=int, default=0, help="cepstral smoothing of the log-mel input (0: off)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help=f"checkpoint path ('none': do not save; default {default_ave_weights()})")
    ap.add_argument("--metrics", default=None, help="write the metrics JSON here")
    args = ap.parse_args(argv)
    out = default_ave_weights() if args.out is None else None if args.out == "none" else args.out
    extra = {"crop_hw": tuple(args.crop)} if args.crop else {}
    try:
        m = train_ave(args.train, args.eval, args.steps, args.seed, out,
                      batch=args.batch, lr=args.lr, recon_weight=args.recon_weight, threads=args.threads,
                      eval_every=args.eval_every, extra_eval=args.also_eval, augment=args.augment,
                      weight_decay=args.weight_decay, dim=args.dim, width=args.width, lifter=args.lifter,
                      nce_weight=args.nce_weight, **extra)
    except LipspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(m, indent=1))
    print(json.dumps({k: v for k, v in m.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
