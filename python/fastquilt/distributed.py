"""The cluster API at the path existing code imports it from: ``ModelFactory`` and
``local_cluster`` (their home is :mod:`fastquilt.outofcore`)."""

from .outofcore.distributed import local_cluster, local_gpu_cluster
from .outofcore.models import ModelFactory, resolve_model

__all__ = ["ModelFactory", "local_cluster", "local_gpu_cluster", "resolve_model"]
