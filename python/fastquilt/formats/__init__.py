"""File formats: OME-Zarr (NGFF) 0.5 metadata and input (:mod:`.ome_zarr`), the OME-Zarr
output written unit by unit (:mod:`.ome_writer`) and its multiscale pyramid (:mod:`.pyramid`)."""

from .ome_zarr import OmeInput, SpaceMeta, open_ome_zarr, space_meta

__all__ = ["OmeInput", "SpaceMeta", "open_ome_zarr", "space_meta"]
