"""MediaPipe's native log lines on fd 2 are hidden; anything else written there still shows."""

import os
import subprocess
import sys

CHILD = r"""
import os, sys
from lipspace.eval.quiet import native_logs_hidden
with native_logs_hidden():
    os.write(2, b"W0000 00:00:1796471767.047669   17012 inference_feedback_manager.cc:121] Feedback manager\n")
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"E1205 real native error\n")
    print("python warning", file=sys.stderr)
os.write(2, b"after\n")
"""


def test_noise_hidden_errors_kept():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err == ["E1205 real native error", "python warning", "after"]
