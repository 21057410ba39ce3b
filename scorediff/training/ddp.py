"""The training loop's view of ``scorediff.distributed`` (kept so that ``training.ddp`` imports stay valid)."""

from ..distributed import (  # noqa: F401
    DEVICES,
    World,
    all_gather_bytes,
    all_mean,
    barrier,
    pick_device,
    setup,
    teardown,
)
