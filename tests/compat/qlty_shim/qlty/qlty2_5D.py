"""``qlty.qlty2_5D`` -> fastquilt.compat."""

from fastquilt.compat.backends25d import TensorLike3D  # noqa: F401
from fastquilt.compat.plans25d import (  # noqa: F401
    ExtractionPlan,
    PatchExtraction,
    StitchingPlan,
)
from fastquilt.compat.quilt25d import NCZYX25DQuilt  # noqa: F401
from fastquilt.compat.zspec import (  # noqa: F401
    ChannelOperation,
    ZOperation,
    apply_boundary_mode,
    compute_channel_count,
    parse_channel_spec,
)
