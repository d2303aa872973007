"""The demo runs end to end (briefly) and writes a valid PNG."""

import struct
import zlib

import numpy as np

from fastquilt import demo
from fastquilt._png import write_png_gray


def test_png_writer_round_trip(tmp_path):
    img = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = write_png_gray(tmp_path / "a.png", img).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (4, 3)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + idat_len])
    rows = np.frombuffer(raw, np.uint8).reshape(3, 5)[:, 1:]
    assert rows[0, 0] == 0 and rows[-1, -1] == 255


def test_demo_smoke(tmp_path, capsys):
    demo.main(["--train-seconds", "0.3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "F1 on the held-out labelled slices" in out and "windows kept" in out
    assert list(tmp_path.glob("*.png"))
