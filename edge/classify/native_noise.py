"""Lines native libraries write straight to the process's stderr that tell a user nothing.

TensorFlow Lite announces its XNNPACK delegate ("INFO: Created TensorFlow Lite XNNPACK delegate
for CPU.") the first time a process allocates an interpreter; TensorFlow's import prints an absl
banner and a oneDNN note; its int8 converter prints its settings. They bypass Python (file
descriptor 2), so the blocks that trigger them run with fd 2 going to a temporary file, and
every line except these known ones is passed on: a real warning or error is never hidden.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

KNOWN_NOISE = (
    re.compile(rb"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."),
    re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(rb"I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on"),
    re.compile(rb"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+"),
)


def is_noise(line: bytes) -> bool:
    return any(pattern.match(line) for pattern in KNOWN_NOISE)


@contextlib.contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Run the block with fd 2 captured; afterwards write back every line that is not known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()  # Python's own writes inside the block go through fd 2 as well
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True) if not is_noise(line)]
            if kept:
                os.write(2, b"".join(kept))
