"""Hide the native log lines MediaPipe's C++ graph writes straight to file descriptor 2 (glog / absl / TFLite:
"W0000 ... Feedback manager requires a model with a single signature ...", "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU."). They say nothing a user can act on and bury an evaluation's own output; ``GLOG_minloglevel``
does not reach them. Every other line written to stderr meanwhile is passed on when the block ends."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

NOISE = re.compile(r"^(?:[WI]0000 \d|WARNING: All log messages before absl::InitializeLog|"
                   r"WARNING: Logging before InitGoogle|INFO: Created TensorFlow Lite)")


@contextlib.contextmanager
def native_logs_hidden():
    """Within the block, fd 2 goes to a temporary file; afterwards the lines that are not MediaPipe noise are
    written to stderr (so real errors still show, after the block rather than during it)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines() if not NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
