"""A minimal 8-bit grayscale PNG writer (zlib + struct), so the demo needs no imaging library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png_gray(path: str | Path, image: np.ndarray) -> Path:
    """Write a 2D array scaled to 0..255 (min..max) as an 8-bit grayscale PNG."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2D, got shape {img.shape}")
    lo, hi = float(img.min()), float(img.max())
    u8 = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) / (hi - lo) * 255).round()
    u8 = u8.astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in u8)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", img.shape[1], img.shape[0], 8, 0, 0, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))
    return path
