"""Pure ``torch.nn`` scGPT: encoders, transformer, heads, masks and losses (no AnnData here)."""

from ._decoders import (
    AdversarialDiscriminator,
    AffineExprDecoder,
    ClsDecoder,
    DomainSpecificBatchNorm1d,
    ExprDecoder,
    MVCDecoder,
    grad_reverse,
)
from ._encoders import BatchLabelEncoder, CategoryValueEncoder, ContinuousValueEncoder, GeneEncoder
from ._flops import encoder_flops
from ._losses import cce_loss, ecs_loss, masked_mse_loss, mnn_loss
from ._model import ScGPTConfig, TransformerModel
from ._transformer import (
    MultiheadSelfAttention,
    TransformerEncoder,
    TransformerEncoderLayer,
    generative_attn_mask,
    padding_attn_mask,
)

__all__ = [
    "AdversarialDiscriminator",
    "AffineExprDecoder",
    "BatchLabelEncoder",
    "CategoryValueEncoder",
    "ClsDecoder",
    "ContinuousValueEncoder",
    "DomainSpecificBatchNorm1d",
    "ExprDecoder",
    "GeneEncoder",
    "MVCDecoder",
    "MultiheadSelfAttention",
    "ScGPTConfig",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerModel",
    "cce_loss",
    "ecs_loss",
    "encoder_flops",
    "generative_attn_mask",
    "grad_reverse",
    "masked_mse_loss",
    "mnn_loss",
    "padding_attn_mask",
]
