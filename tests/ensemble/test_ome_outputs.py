"""Several outputs of an ensemble with TTA into OME-Zarr: the mean is the root image, the
other float outputs image groups of their own, the labels an NGFF label image with mode
levels; every level of every output is written by the unit's owner before its marker (one
process here, the cluster in tests/outofcore/test_distributed.py, kill -9 in
test_out_of_core.py)."""

import json

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.outofcore import progress_of
from tests.outofcore.ome_check import check_outputs, output_path, validate

zarr = pytest.importorskip("zarr")

OUTPUTS = ("mean", "std", "labels")
KW = dict(outputs=OUTPUTS, tta="flips", activation="softmax", batch_size=5, chunks=8,
          unit=16)


def members(seed=0, D=3):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if D == 3 else torch.nn.Conv2d
    return [conv(1, 3, 3, padding=1).eval() for _ in range(2)]


def count_calls(models) -> list:
    """The batch sizes of every call of the members (the same models: the same fingerprint)."""
    calls = []
    for m in models:
        m.register_forward_hook(lambda mod, args, out: calls.append(len(out)))
    return calls


def plain_outputs(models, x, path, **kw):
    """The outputs of the same run into a plain zarr group, by name."""
    group = fq.sliding_window(models, x, 12, 9, out=path, **{**KW, **kw})
    return {n: group[n][...] for n in group.array_keys()}


def test_mean_std_labels_into_ome_zarr_in_one_process(tmp_path):
    x = np.random.default_rng(3).standard_normal((1, 1, 26, 24, 22)).astype(np.float32)
    models = members()
    want = plain_outputs(models, x, tmp_path / "plain.zarr")
    out = tmp_path / "x.ome.zarr"
    got = fq.sliding_window(models, x, 12, 9, out=out, levels=2, voxel_size=0.5,
                            voxel_unit="micrometer", **KW)
    assert isinstance(got, zarr.Group) and got["0"].shape == (1, 3, 26, 24, 22)
    assert got["std/0"].shape == (1, 3, 26, 24, 22)
    assert got["labels/labels/0"].dtype == np.uint8 and got["labels/labels/0"].shape[1] == 1
    check_outputs(out, OUTPUTS, 2, want, exact_floats=True)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["fastquilt_outputs"] == ["std"]
    labels = json.loads((out / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    assert labels["labels"] == ["labels"]
    image_label = json.loads((out / "labels" / "labels" / "zarr.json").read_text())[
        "attributes"]["ome"]["image-label"]
    assert image_label["source"] == {"image": "../../"}
    scale = attrs["ome"]["multiscales"][0]["datasets"][2]["coordinateTransformations"][0]
    assert scale["scale"] == [1.0, 1.0, 2.0, 2.0, 2.0]
    p = progress_of(out)
    assert p["done"] == p["total"] and p["metadata"]["outputs"] == list(OUTPUTS)
    # resumed with nothing left to do: the same group back, nothing run
    calls = count_calls(models)
    again = fq.sliding_window(models, x, 12, 9, out=out, levels=2, voxel_size=0.5,
                              voxel_unit="micrometer", **KW)
    assert calls == [] and isinstance(again, zarr.Group)
    # display colours for the labels; a label image that is not there: a clear error
    from fastquilt.formats.ome_writer import set_label_colors

    set_label_colors(out, "labels", {1: (255, 0, 0, 255)})
    assert validate(out / "labels" / "labels", "labels").ome_attributes.image_label.colors[
        0].rgba == (255, 0, 0, 255)
    with pytest.raises(ValueError, match="no label image labels/cells"):
        set_label_colors(out, "cells", {1: (255, 0, 0, 255)})
    # other outputs into the same output: refused
    with pytest.raises(ValueError, match="different geometry"):
        fq.sliding_window(models, x, 12, 9, out=out, levels=2, voxel_size=0.5,
                          voxel_unit="micrometer", **{**KW, "outputs": ("mean", "labels")})


def test_a_unit_marked_done_with_a_labels_level_missing_runs_again(tmp_path):
    x = np.random.default_rng(4).standard_normal((1, 1, 40, 36, 34)).astype(np.float32)
    models = members(1)
    want = plain_outputs(models, x, tmp_path / "plain.zarr")
    out = tmp_path / "x.ome.zarr"
    fq.sliding_window(models, x, 12, 9, out=out, levels=2, **KW)
    # a chunk of level 2 of the labels (the first unit) and one of level 1 of the std (the
    # last unit): those two units run again, the others are kept
    (out / "labels" / "labels" / "2" / "c" / "0" / "0" / "0" / "0" / "0").unlink()
    (out / "std" / "1" / "c" / "0" / "0" / "2" / "2" / "2").unlink()
    ran = count_calls(models)
    fq.sliding_window(models, x, 12, 9, out=out, levels=2, **KW)
    assert 0 < sum(ran) < 2 * 8 * len(fq.Quilt(x.shape[2:], 12, 9).grid.origins(1))
    check_outputs(out, OUTPUTS, 2, want, exact_floats=True)


def test_without_mean_the_first_float_output_is_the_root_image_2d(tmp_path):
    x = np.random.default_rng(5).standard_normal((2, 1, 40, 36)).astype(np.float32)
    models = members(2, D=2)
    names = ("labels", "probability", "entropy")
    want = plain_outputs(models, x, tmp_path / "plain.zarr", outputs=names, chunks=8,
                         unit=(16, 8))
    out = tmp_path / "x.ome.zarr"
    fq.sliding_window(models, x, 12, 9, out=out, levels=3, **{**KW, "outputs": names,
                                                                "unit": (16, 8)})
    check_outputs(out, names, 3, want, root="probability", exact_floats=True)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["fastquilt_outputs"] == ["entropy"] and "fastquilt" in json.loads(
        (out / "0" / "zarr.json").read_text())["attributes"]
    assert output_path("entropy", 1, "probability") == "entropy/1"
    assert progress_of(out)["done"] == progress_of(out)["total"]


def test_labels_alone_are_refused_as_ome_zarr_with_the_fix_named(tmp_path):
    x = np.zeros((1, 1, 16, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"label image needs a parent image.*add a float "
                                         r"output.*\('probability', 'labels'\).*ome_zarr=False"):
        fq.sliding_window(members(), x, 12, 9, out=tmp_path / "x.ome.zarr",
                          **{**KW, "outputs": ("labels",)})
    assert not (tmp_path / "x.ome.zarr").exists()
    # the same as a plain zarr group is fine
    g = fq.sliding_window(members(), x, 12, 9, out=tmp_path / "x.zarr", ome_zarr=False,
                          **{**KW, "outputs": ("labels",)})
    assert g["labels"].dtype == np.uint8
