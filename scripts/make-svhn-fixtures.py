"""Writes the small SVHN-format MAT-files of tests/fixtures/svhn/ with SciPy (the standard
tool that reads and writes these files), so that defed's reader is checked against files it
did not write itself.

    python3 -m venv /var/tmp/torchenv && /var/tmp/torchenv/bin/pip install scipy numpy
    /var/tmp/torchenv/bin/python3 scripts/make-svhn-fixtures.py tests/fixtures/svhn

Pixel (row h, column w, channel c) of image n is (7 h + 3 w + 50 c + 11 n) % 256; the labels
are 10, 1, 9 (SVHN writes the digit 0 as 10).
"""
import sys

import numpy as np
import scipy.io

out = sys.argv[1]
n = 3
h, w, c, k = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), np.arange(n), indexing="ij")
X = ((7 * h + 3 * w + 50 * c + 11 * k) % 256).astype(np.uint8)  # 32 x 32 x 3 x N, as SVHN
y = np.array([[10], [1], [9]], dtype=np.float64)  # N x 1 doubles, as SVHN
scipy.io.savemat(f"{out}/svhn-plain.mat", {"X": X, "y": y}, do_compression=False)
scipy.io.savemat(f"{out}/svhn-compressed.mat", {"X": X, "y": y}, do_compression=True)
# Wrong variables: the images under another name.
scipy.io.savemat(f"{out}/svhn-no-x.mat", {"images": X, "y": y}, do_compression=True)
# MATLAB 4 format (not level 5).
scipy.io.savemat(f"{out}/svhn-v4.mat", {"X": X[:, :, 0, 0], "y": y}, format="4")
