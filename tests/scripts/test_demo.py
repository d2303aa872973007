"""The demo runs end to end (briefly) and writes a valid PNG and a valid OME-Zarr."""

import numpy as np
import zarr
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
    assert "F1 of each member" in out
    # beside it, the ensemble's prediction as OME-Zarr: the class probabilities (root image),
    # their std and the labels, each with a pyramid, read by the ecosystem
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    from tests.outofcore.ome_check import read_with_ome_zarr_py

    path = tmp_path / "pred.ome.zarr"
    image = Image.from_zarr(zarr.open_group(str(path), mode="r"))
    assert len(image.ome_attributes.multiscales[0].datasets) == 3
    std = Image.from_zarr(zarr.open_group(str(path / "std"), mode="r"))
    assert len(std.ome_attributes.multiscales[0].datasets) == 3
    label = ImageLabel.from_zarr(zarr.open_group(str(path / "labels" / "labels"), mode="r"))
    assert label.ome_attributes.image_label.colors[0].label_value == 1
    nodes = read_with_ome_zarr_py(path)
    assert len(nodes[0].data) == 3 and any("labels" in str(n.zarr.path) for n in nodes[1:])
    prob = zarr.open_array(str(path / "0"))[...]
    labels = zarr.open_array(str(path / "labels" / "labels" / "0"))[...]
    assert prob.shape[1] == 2 and labels.dtype == np.uint8
    np.testing.assert_allclose(prob.sum(1), 1, rtol=1e-5)  # (background, filament)
    assert np.array_equal(labels[:, 0], prob.argmax(1))
