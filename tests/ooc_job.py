"""Subprocess for the kill/resume test: a slow deterministic model writing to zarr."""

import sys
import time

import zarr

import fastquilt as fq


def model(p):
    time.sleep(0.05)  # slow enough to be killed mid-run
    return p * 2.0 + 1.0


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    fq.sliding_window(model, zarr.open_array(src, mode="r"), 16, 12, batch_size=4,
                      weight="gaussian", out=dst, chunks=16, unit=16)
