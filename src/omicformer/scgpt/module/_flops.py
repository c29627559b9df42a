"""Forward FLOPs of the scGPT transformer encoder, for model FLOP utilisation (MFU) figures."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._model import ScGPTConfig


def encoder_flops(config: ScGPTConfig, lengths: ArrayLike) -> np.ndarray:
    r"""Forward FLOPs of the transformer encoder for cells of ``lengths`` tokens each.

    Counts the matrix multiplications of the ``config.nlayers`` encoder layers
    (:class:`TransformerEncoderLayer`), one multiply-accumulate (MAC) = 2 FLOPs. For a cell of
    ``L`` tokens, with ``d = d_model`` and ``d_hid`` the feed-forward width, each token in each
    layer costs these MACs:

    ============================  ================  ===========================================
    term                          MACs per token    where
    ============================  ================  ===========================================
    Q, K, V projections           ``3 d^2``         ``self_attn.in_proj_weight`` (3d x d)
    attention scores ``Q K^T``    ``L d``           per head ``L x d/nhead``, times ``nhead``
    weights times ``V``           ``L d``           per head ``L x d/nhead``, times ``nhead``
    output projection             ``d^2``           ``self_attn.out_proj`` (d x d)
    feed-forward                  ``2 d d_hid``     ``linear1`` (d_hid x d), ``linear2`` (d x d_hid)
    ============================  ================  ===========================================

    so ``4 d^2 + 2 d d_hid + 2 L d`` MACs, that is

    .. math::

        \text{FLOPs per token per layer} = 2\,(4 d^2 + 2 d\,d_{hid} + 2 L d)
                                         = 8 d^2 + 4 d\,d_{hid} + 4 L d,

    and per cell ``nlayers * L * (8 d^2 + 4 d d_hid + 4 L d)``.

    Not counted: the gene and value token encoders (embedding lookups; the continuous value
    encoder's ``Linear(1, d)`` and ``Linear(d, d)``, ``d^2 + d`` MACs per token: at most 1/72
    of the counted work for the whole-human configuration, d_model = d_hid = 512 in 12 layers),
    biases, layer norms, softmax, ReLU, dropout and residual adds (``O(d)`` per token, not
    matrix multiplications), attention-mask handling, the output heads, and work done on
    padding tokens (only the ``L`` real tokens of a cell are counted, however long the padded
    batch it runs in). MFU figures built on this count therefore understate the work the
    hardware did, slightly when batches carry little padding.

    MFU: achieved FLOP/s = (sum of these counted forward FLOPs over all cells) / wall-clock
    seconds of the run; MFU = achieved FLOP/s / peak FLOP/s of the device for the dtype used.

    Parameters
    ----------
    config
        Architecture; uses ``d_model``, ``d_hid`` and ``nlayers``.
    lengths
        Tokens per cell (``<cls>`` included), a scalar or an array.

    Returns
    -------
    ``int64`` array shaped like ``lengths``: forward FLOPs of each cell.

    Examples
    --------
    ``d_model=4``, ``d_hid=8``, one layer, one cell of 3 tokens: per token
    ``8*16 + 4*4*8 + 4*3*4 = 128 + 128 + 48 = 304`` FLOPs, so ``3 * 304 = 912``.
    """
    d, d_hid, n = int(config.d_model), int(config.d_hid), int(config.nlayers)
    L = np.asarray(lengths, dtype=np.int64)
    macs_per_token = 4 * d * d + 2 * d * d_hid + 2 * L * d
    return n * L * 2 * macs_per_token
