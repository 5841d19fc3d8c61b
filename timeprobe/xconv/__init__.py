r"""timeprobe.xconv — memory-efficient convolution layers by probing (PyTorch).

The weight gradient of a convolution is a sum of traces
:math:`\delta w_k = \operatorname{tr}(\mathbf{X}\,\delta\mathbf{Y}^\top\mathbf{T}_{-k})`; with
probes :math:`\mathbb{E}[\mathbf{Z}\mathbf{Z}^\top] = \mathbf{I}` it is estimated without
bias from the sketch :math:`\bar{\mathbf{X}} = \mathbf{Z}^\top\mathbf{X}` (kept in the
forward pass instead of :math:`\mathbf{X}`) and a seed that regenerates :math:`\mathbf{Z}`.
Input and bias gradients stay exact.

Public API::

    Xconv1D, Xconv2D, Xconv3D          # nn.Conv1d/2d/3d subclasses, ps=0 -> exact
    xconv1d, xconv2d, xconv3d, xconv   # functional forms
    convert_net(model, ps=8, mode='all', probe='rademacher', relu=False, seed=None)
    BitReLU, bit_relu                  # ReLU keeping a 1-bit packed mask
    draw_probes, mix_seed              # probe generation
    nets                               # small reference networks (no weight downloads)

This subpackage imports torch; ``import timeprobe`` does not.
"""
from .functional import (DEFAULT_MAX_PROBE_BYTES, check_ps, probe_storage_bytes, xconv, xconv1d,
                         xconv2d, xconv3d)
from .modules import Xconv1D, Xconv2D, Xconv3D, convert_net
from .probes import MODES, PROBES, draw_probes, mix_seed
from .relu import BitReLU, bit_relu
from . import nets

__all__ = ["Xconv1D", "Xconv2D", "Xconv3D", "xconv", "xconv1d", "xconv2d", "xconv3d",
           "convert_net", "BitReLU", "bit_relu", "draw_probes", "mix_seed", "MODES", "PROBES",
           "DEFAULT_MAX_PROBE_BYTES", "probe_storage_bytes", "check_ps", "nets"]
