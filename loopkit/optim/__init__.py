"""Fused optimizer steps whose hyperparameters live in device memory: class -> reference / CUDA kernels.

- :class:`FusedAdamW`, :class:`FusedSGD`: ``torch.optim.Optimizer`` subclasses with torch's semantics;
- ``_reference.py``: the multi-tensor math in torch ops, the CPU path and the kernels' test oracle;
- ``kernels/*.cu``: CUDA C++ compiled at first use by NVRTC (``_cuda.py``), cached per device and dtype.
"""

from .adamw import FusedAdamW
from .sgd import FusedSGD

__all__ = ["FusedAdamW", "FusedSGD"]
