import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Sized so that `make test` stays well under its budget on 2 cores.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FQ_HYPOTHESIS_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("ci")


def cuda_available() -> bool:
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA device")

DEVICES = ["cpu"] + (["cuda"] if cuda_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
