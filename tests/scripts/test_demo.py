"""The demo runs end to end (briefly) and writes a valid PNG."""

import numpy as np
from PIL import Image

from fastquilt import demo


def test_png_writer_scales_min_to_max(tmp_path):
    img = np.arange(12, dtype=np.float64).reshape(3, 4)
    path = demo.write_png_gray(tmp_path / "a.png", img)
    with Image.open(path) as png:
        assert png.mode == "L" and png.size == (4, 3)
        rows = np.asarray(png)
    assert rows[0, 0] == 0 and rows[-1, -1] == 255
    assert np.array_equal(rows, np.round(img / 11 * 255).astype(np.uint8))


def test_demo_smoke(tmp_path, capsys):
    demo.main(["--train-seconds", "0.3", "--min-steps", "2", "--members", "2",
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "F1 on the held-out labelled slices" in out and "windows kept" in out
    assert list(tmp_path.glob("*.png"))
