"""seqlab: the road from the McCulloch–Pitts neuron to the Transformer, implemented, trained and measured."""

import os

# Idle OpenMP threads sleep instead of spinning. On a busy 2-core machine spinning threads made a small
# model's training step ~30x slower (1.5 ms → 48 ms with torch's 2 threads). OpenMP reads this once, when
# torch is first imported, so it is set here, before any seqlab module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from seqlab.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()

__version__ = "0.1.0"
