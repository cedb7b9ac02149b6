"""Real footage for tests: OpenCV's sample `vtest.avi` (768x576, 795 frames, 10 fps, people walking),
shipped by Debian's `opencv-doc` package (`.ci/run` installs it when it can)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
needs_vtest = pytest.mark.skipif(not VTEST.is_file(), reason=f"{VTEST} missing: apt-get install opencv-doc")


def vtest_frames(indices: list[int]) -> np.ndarray:
    """RGB frames of vtest.avi at `indices` (increasing), decoded in order."""
    from stemcell.world.video_io import open_source

    wanted, out = set(indices), []
    with open_source(VTEST) as source:
        for index, (frame, _) in enumerate(source):
            if index in wanted:
                out.append(frame)
            if index >= max(indices):
                break
    return np.stack(out)
