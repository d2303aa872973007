"""OME-Zarr 0.5 out of core: the output is an NGFF image that ome-zarr-py reads and
ome-zarr-models validates, its pyramid levels (written by the unit owners) equal a float64
reference downsample of the full result, resume and exactly-once hold for every level, an
OME-Zarr input keeps its metadata, and label outputs go under labels/."""

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
import zarr

import fastquilt as fq
from fastquilt.formats.ome_writer import OmeWriter
from fastquilt.formats.ome_zarr import space_meta
from fastquilt.outofcore.store import OutputStore

from .ome_check import read_with_ome_zarr_py, reference_levels, validate


def model(p):
    return torch.cat([p * 2 + 1, p.abs()], 1)


def levels_of(path, levels):
    return [zarr.open_array(str(path / str(lv)), mode="r")[...] for lv in range(levels + 1)]


def check_pyramid(path, levels, want0):
    got = levels_of(path, levels)
    np.testing.assert_allclose(got[0], want0, rtol=1e-5, atol=1e-5)
    for lv, (g, w) in enumerate(zip(got[1:], reference_levels(got[0], levels)), 1):
        assert g.shape == w.shape, lv
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"level {lv}")


@pytest.mark.parametrize("shape,window,step,chunks,unit,levels", [
    ((2, 1, 37, 45, 29), 12, 9, 8, 16, 2),
    ((1, 2, 70, 53), (16, 12), (11, 9), 8, (32, 16), 3),
])
def test_ome_output_is_valid_and_its_levels_equal_a_float64_reference(
        tmp_path, shape, window, step, chunks, unit, levels):
    x = torch.randn(shape)
    out = tmp_path / "pred.ome.zarr"
    y = fq.sliding_window(model, x, window, step, out=str(out), chunks=chunks, unit=unit,
                          levels=levels, voxel_size=0.5, voxel_unit="micrometer")
    want = fq.sliding_window(model, x, window, step).numpy()
    check_pyramid(out, levels, want)
    np.testing.assert_allclose(y[...], want, rtol=1e-5, atol=1e-5)
    D = x.dim() - 2
    image = validate(out)
    ms = image.ome_attributes.multiscales[0]
    assert [a.name for a in ms.axes] == ["t", "c", *"zyx"[3 - D:]]
    assert [a.unit for a in ms.axes][2:] == ["micrometer"] * D
    node = read_with_ome_zarr_py(out)[0]
    assert [d.shape for d in node.data] == [a.shape for a in levels_of(out, levels)]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 1.0, *[0.5 * 2 ** lv] * D] for lv in range(levels + 1)]
    for lv in range(levels + 1):
        assert zarr.open_array(str(out / str(lv))).metadata.dimension_names == \
            ("t", "c", *"zyx"[3 - D:])
    assert fq.outofcore.progress_of(out)["done"] == fq.outofcore.progress_of(out)["total"]


def test_every_level_is_written_before_the_mark_and_resumes_exactly_once(tmp_path,
                                                                          monkeypatch):
    x = torch.randn(1, 1, 40, 36, 44)
    out = tmp_path / "pred.ome.zarr"
    args = dict(out=str(out), chunks=8, unit=16, levels=2)
    want = fq.sliding_window(model, x, 12, 9).numpy()
    # a failure while writing one unit's level 2: that unit is not marked done
    real = OmeWriter.write_levels
    calls = []

    def failing(self, name, n, box, block, dtype):
        calls.append(box)
        if len(calls) == 5:
            raise OSError("disk full")
        real(self, name, n, box, block, dtype)

    monkeypatch.setattr(OmeWriter, "write_levels", failing)
    with pytest.raises(RuntimeError, match="not marked done"):
        fq.sliding_window(model, x, 12, 9, writer_threads=1, **args)
    monkeypatch.setattr(OmeWriter, "write_levels", real)
    done = fq.outofcore.progress_of(out)["done"]
    assert 0 < done < fq.outofcore.progress_of(out)["total"]
    # a level-2 chunk of a finished unit gone: that unit runs again
    (out / "2" / "c" / "0" / "0" / "0" / "0" / "0").unlink()
    ran = []
    fq.sliding_window(lambda p: ran.append(len(p)) or model(p), x, 12, 9, **args)
    assert 0 < sum(ran) < len(fq.Quilt(x.shape[2:], 12, 9).grid.origins(1))
    check_pyramid(out, 2, want)
    # another pyramid, voxel size or plain zarr into the same output: refused
    for other in (dict(levels=1), dict(voxel_size=2.0)):
        with pytest.raises(ValueError, match="different geometry|has 2 pyramid levels"):
            fq.sliding_window(model, x, 12, 9, **{**args, **other})
    with pytest.raises(ValueError, match="apply to an OME-Zarr output only"):
        fq.sliding_window(model, x, 12, 9, out=str(tmp_path / "plain.zarr"), levels=2)
    with pytest.raises(ValueError, match=r"levels=3 needs units that are multiples of 8"):
        fq.sliding_window(model, x, 12, 9, out=str(tmp_path / "b.ome.zarr"), chunks=4,
                          unit=12, levels=3)


def write_ome_input(path, data, axes, scale, translation=None, levels=2):
    """An OME-Zarr image written by ome-zarr-py (the ecosystem's writer), for input tests."""
    from ome_zarr.format import FormatV05

    pyramid = [data[..., ::1 << lv, ::1 << lv, ::1 << lv] for lv in range(levels)]
    transforms = [[{"type": "scale", "scale": [s * (1 << lv) if i >= len(axes) - 3 else s
                                               for i, s in enumerate(scale)]}]
                  + ([{"type": "translation", "translation": translation}] if translation
                     else []) for lv in range(levels)]
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    with warnings.catch_warnings():  # (ome-zarr-py's own deprecations of its older API,
        warnings.simplefilter("ignore", DeprecationWarning)  # some raised on import)
        from ome_zarr.writer import write_multiscale

        write_multiscale(pyramid, group=root, axes=axes, fmt=FormatV05(),
                         coordinate_transformations=transforms)


def test_ome_input_keeps_its_metadata_and_reads_any_level(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1, 24, 20, 28)).astype(np.float32)  # (c, z, y, x)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    src = tmp_path / "tomo.ome.zarr"
    write_ome_input(src, data, axes, [1.0, 4.0, 2.0, 2.0], [0.0, 10.0, 20.0, 30.0])
    x = fq.open_ome_zarr(src)
    assert x.shape == (1, 1, 24, 20, 28)
    np.testing.assert_array_equal(x[...], data[None])
    np.testing.assert_array_equal(x[(0, slice(None), slice(2, 5), slice(None), slice(3, 9))],
                                  data[:, 2:5, :, 3:9])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(x))[...], data[None])  # (dask)
    assert x.chunks[:2] == (1, 1)
    out = tmp_path / "pred.ome.zarr"
    fq.sliding_window(model, x, 8, 6, out=str(out), chunks=8, unit=16, levels=1)
    np.testing.assert_allclose(zarr.open_array(str(out / "0"))[...],
                               fq.sliding_window(model, torch.from_numpy(data[None]), 8, 6),
                               rtol=1e-5, atol=1e-5)
    ms = validate(out).ome_attributes.multiscales[0]
    assert [a.unit for a in ms.axes][2:] == ["nanometer"] * 3
    t0 = ms.datasets[0].coordinateTransformations
    assert t0[0].scale == [1.0, 1.0, 4.0, 2.0, 2.0]
    assert t0[1].translation == [0.0, 0.0, 10.0, 20.0, 30.0]
    # level 1 through the command line: its own voxel size becomes the output's level 0
    from fastquilt.cli import main

    rc = main(["infer", "--model", "ooc_job:double_plus_one", "--input", str(src),
               "--level", "1", "--output", str(tmp_path / "l1.ome.zarr"), "--window", "6",
               "--step", "4", "--levels", "1", "--unit", "8", "--chunks", "4"])
    assert rc == 0, capsys.readouterr().err
    attrs = json.loads((tmp_path / "l1.ome.zarr" / "zarr.json").read_text())["attributes"]
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"] == [1.0, 1.0, 8.0, 4.0, 4.0]
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "l1.ome.zarr" / "0"))[...],
                               fq.sliding_window(lambda p: p * 2 + 1,
                                                 torch.from_numpy(data[None, :, ::2, ::2, ::2]),
                                                 6, 4), rtol=1e-5, atol=1e-5)
    base = ["infer", "--model", "ooc_job:double_plus_one", "--input", str(src), "--output",
            str(tmp_path / "bad.ome.zarr"), "--window", "6", "--step", "4"]
    with pytest.raises(SystemExit, match="level must be an int in 0..1"):
        main([*base, "--level", "2"])
    assert main([*base, "--voxel-size", "1", "2"]) == 2
    assert "voxel_size must be one positive number or 3" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _test_models(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_label_outputs_are_ngff_label_images_with_mode_levels(tmp_path):
    # the hook a labels output (the segmentation issue) goes through: an integer output
    # written unit by unit under labels/, downsampled by the mode
    from fastquilt.outofcore.units import Units

    spatial, unit = (20, 24, 18), (8, 8, 8)
    units = Units(1, spatial, unit)
    store = OutputStore(tmp_path / "seg.ome.zarr", units, (8, 8, 8), None,
                        out_dtype="float32", compressors="auto", fill_value=0.0,
                        metadata={"format": 1})
    ome = OmeWriter(store.path, space_meta(3, 0.25, "micrometer"), 2, spatial, unit, (8, 8, 8),
                    None)
    store.ome = ome
    store.ensure(1)
    ome.create("labels", "labels", 1, 1, "uint16", {})
    labels = np.random.default_rng(1).integers(0, 3, (1, 1, *spatial)).astype(np.uint16)
    for uid in range(units.total()):
        n, box = units.box(uid)
        block = torch.from_numpy(labels[(n, slice(None), *box)].astype(np.int32))
        ome.arrays["labels"][0][(n, slice(None), *box)] = block.numpy().astype(np.uint16)
        ome.write_levels("labels", n, box, block, "uint16")
    from tests.formats.test_pyramid import mode_reference

    want = labels[0]
    for lv in (1, 2):
        want = mode_reference(want)
        got = zarr.open_array(str(tmp_path / "seg.ome.zarr" / "labels" / "labels" / str(lv)))
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got[0], want)
    validate(tmp_path / "seg.ome.zarr" / "labels" / "labels", "labels")
    # another float output (a std): an image group of its own beside the levels
    ome.create("std", "image", 1, 1, "float32", {})
    std = np.random.default_rng(2).random((1, 1, *spatial)).astype(np.float32)
    for uid in range(units.total()):
        n, box = units.box(uid)
        ome.arrays["std"][0][(n, slice(None), *box)] = std[(n, slice(None), *box)]
        ome.write_levels("std", n, box, torch.from_numpy(std[(n, slice(None), *box)]),
                         "float32")
    got = zarr.open_array(str(tmp_path / "seg.ome.zarr" / "std" / "2"))[...]
    np.testing.assert_allclose(got, reference_levels(std, 2)[1], rtol=1e-5, atol=1e-6)
    validate(tmp_path / "seg.ome.zarr" / "std")
    root = json.loads((tmp_path / "seg.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert root["fastquilt_outputs"] == ["std"]
    validate(tmp_path / "seg.ome.zarr")  # the root image, with labels/ and std/ inside
    nodes = read_with_ome_zarr_py(tmp_path / "seg.ome.zarr")
    assert any(n.zarr.path.rstrip("/").endswith("labels/labels") for n in nodes)
