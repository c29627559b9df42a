"""The scGPT transformer (Cui et al., Nature Methods 2024) in plain torch.

Reads top-down: config, then :class:`TransformerModel`. Submodule and parameter names equal the
official ``scgpt.model.TransformerModel`` so that official checkpoints load by key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ._decoders import (
    AdversarialDiscriminator,
    AffineExprDecoder,
    ClsDecoder,
    DomainSpecificBatchNorm1d,
    ExprDecoder,
    MVCDecoder,
)
from ._encoders import BatchLabelEncoder, CategoryValueEncoder, ContinuousValueEncoder, GeneEncoder
from ._losses import cce_loss, ecs_loss
from ._transformer import TransformerEncoder, generative_attn_mask, padding_attn_mask

#: Accepted ``ScGPTConfig.cell_emb_style`` values (the official three, then ours).
CELL_EMB_STYLES = ("cls", "avg-pool", "w-pool", "gene-mean")


def check_cell_emb_style(style: str) -> None:
    """Raise ``ValueError`` unless ``style`` is one of :data:`CELL_EMB_STYLES`."""
    if style not in CELL_EMB_STYLES:
        msg = f"cell_emb_style={style!r} must be one of {CELL_EMB_STYLES}."
        raise ValueError(msg)


@dataclass
class ScGPTConfig:
    """Architecture of a scGPT model (official argument names in comments)."""

    ntoken: int  # vocabulary size incl. <pad>, <cls>, <eoc>
    pad_token_id: int  # vocab["<pad>"]
    d_model: int = 512  # "embsize"
    nhead: int = 8  # "nheads"
    d_hid: int = 512
    nlayers: int = 12
    nlayers_cls: int = 3  # "n_layers_cls"
    n_cls: int = 1
    dropout: float = 0.2
    pad_value: float = -2.0
    mask_value: float = -1.0
    n_bins: int = 51
    do_mvc: bool = True  # "MVC"
    do_dab: bool = False  # "DAB"
    use_batch_labels: bool = False
    num_batch_labels: int | None = None
    domain_spec_batchnorm: bool | str = False  # "DSBN"
    input_emb_style: str = "continuous"  # continuous | category | scaling
    n_input_bins: int | None = None
    # cls | avg-pool | w-pool; our addition "gene-mean": the mean output of the gene tokens,
    # without <cls> and padding (official avg-pool averages every position, padding included)
    cell_emb_style: str = "cls"
    mvc_decoder_style: str = "inner product"
    ecs_threshold: float = 0.3
    explicit_zero_prob: bool = False
    pre_norm: bool = False
    use_generative_training: bool = True  # adds `flag_encoder` for tokens to generate
    # perturbation prediction (official TransformerGenerator): per-gene perturbation flag
    # embedding `pert_encoder` (0 not perturbed, 1 perturbed, pert_pad_id: no vector) and the
    # affine expression decoder `coeff(h) * x_ctrl + bias(h)`
    perturbation: bool = False
    pert_pad_id: int = 2
    # our addition: a per-gene prior of the perturbation's effect (e.g. from the control cells'
    # covariance) enters as a second continuous value (`prior_encoder`) and as a residual of
    # the decoder: coeff(h) * x_ctrl + bias(h) + prior
    perturbation_prior: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScGPTConfig:
        """Build from a dict, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class TransformerModel(nn.Module):
    """scGPT: gene + value token embeddings -> transformer encoder -> expression and cell heads."""

    def __init__(self, config: ScGPTConfig):
        super().__init__()
        c = self.config = config
        check_cell_emb_style(c.cell_emb_style)
        if (c.use_batch_labels or c.domain_spec_batchnorm or c.do_dab) and not c.num_batch_labels:
            msg = "num_batch_labels is required with use_batch_labels, domain_spec_batchnorm or do_dab."
            raise ValueError(msg)

        self.encoder = GeneEncoder(c.ntoken, c.d_model, padding_idx=c.pad_token_id)
        if c.input_emb_style == "continuous":
            self.value_encoder = ContinuousValueEncoder(c.d_model, c.dropout)
        elif c.input_emb_style == "category":
            if not c.n_input_bins:
                msg = "input_emb_style='category' needs n_input_bins."
                raise ValueError(msg)
            self.value_encoder = CategoryValueEncoder(
                c.n_input_bins, c.d_model, padding_idx=int(c.pad_value)
            )
        elif c.input_emb_style == "scaling":
            self.value_encoder = nn.Identity()
        else:
            msg = f"Unknown input_emb_style {c.input_emb_style!r}."
            raise ValueError(msg)
        if c.use_batch_labels:
            self.batch_encoder = BatchLabelEncoder(c.num_batch_labels, c.d_model)
        if c.domain_spec_batchnorm is True or c.domain_spec_batchnorm == "dsbn":
            self.dsbn = DomainSpecificBatchNorm1d(c.d_model, c.num_batch_labels, eps=6.1e-5)
        elif c.domain_spec_batchnorm == "batchnorm":
            self.bn = nn.BatchNorm1d(c.d_model, eps=6.1e-5)
        if c.use_generative_training:
            self.flag_encoder = nn.Embedding(2, c.d_model)
        if c.perturbation:
            self.pert_encoder = nn.Embedding(3, c.d_model, padding_idx=c.pert_pad_id)
        if c.perturbation_prior:
            if not c.perturbation:
                msg = "perturbation_prior=True needs perturbation=True."
                raise ValueError(msg)
            self.prior_encoder = ContinuousValueEncoder(c.d_model, c.dropout)

        self.transformer_encoder = TransformerEncoder(
            c.d_model, c.nhead, c.d_hid, c.nlayers, c.dropout, "pre" if c.pre_norm else "post"
        )
        if c.perturbation:
            self.decoder = AffineExprDecoder(c.d_model, c.explicit_zero_prob, c.use_batch_labels)
        else:
            self.decoder = ExprDecoder(c.d_model, c.explicit_zero_prob, c.use_batch_labels)
        self.cls_decoder = ClsDecoder(c.d_model, c.n_cls, nlayers=c.nlayers_cls)
        if c.do_mvc:
            self.mvc_decoder = MVCDecoder(
                c.d_model, c.mvc_decoder_style, c.explicit_zero_prob, c.use_batch_labels
            )
        if c.do_dab:
            self.grad_reverse_discriminator = AdversarialDiscriminator(
                c.d_model, c.num_batch_labels, reverse_grad=True
            )
        nn.init.uniform_(self.encoder.embedding.weight, -0.1, 0.1)  # as official init_weights()

    def set_dropout(self, p: float) -> None:
        """Set every dropout rate (value encoder, attention, feed-forward) to ``p``.

        ``config.dropout`` follows, so saved models record the rate they were trained with.
        """
        import dataclasses

        from ._transformer import MultiheadSelfAttention

        if not 0 <= p < 1:
            msg = f"dropout={p} must lie in [0, 1)."
            raise ValueError(msg)
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = float(p)
            elif isinstance(m, MultiheadSelfAttention):
                m.dropout = float(p)
        self.config = dataclasses.replace(self.config, dropout=float(p))

    # ---------------------------------------------------------------- embedding + encoder
    def _embed_tokens(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        batch_labels: torch.Tensor | None,
        pert_flags: torch.Tensor | None = None,
        pert_prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings ``(B, L, D)`` and the gene embeddings before values are added."""
        c = self.config
        if batch_labels is not None and not (c.use_batch_labels or c.domain_spec_batchnorm):
            msg = (  # the official _check_batch_labels
                "batch_labels were given to a model without batch-dependent layers "
                "(use_batch_labels and domain_spec_batchnorm are both False); pass "
                "batch_labels=None."
            )
            raise ValueError(msg)
        gene = self.encoder(src)
        if self.config.input_emb_style == "scaling":
            total = gene * values.unsqueeze(2)
        else:
            total = gene + self.value_encoder(values)
        if pert_flags is not None:
            if not self.config.perturbation:
                msg = "pert_flags need a model built with perturbation=True (pert_encoder)."
                raise ValueError(msg)
            total = total + self.pert_encoder(pert_flags)
        if pert_prior is not None:
            if not self.config.perturbation_prior:
                msg = "pert_prior needs a model built with perturbation_prior=True."
                raise ValueError(msg)
            total = total + self.prior_encoder(pert_prior)
        return self._domain_norm(total, batch_labels), gene

    def _domain_norm(self, total: torch.Tensor, batch_labels: torch.Tensor | None) -> torch.Tensor:
        if hasattr(self, "dsbn"):
            if batch_labels is None:
                msg = "This model uses domain-specific batch norm: pass batch_labels."
                raise ValueError(msg)
            x = total.permute(0, 2, 1)
            domains = torch.unique(batch_labels)
            if len(domains) == 1:  # the official case: one batch per minibatch
                return self.dsbn(x, int(domains[0].item())).permute(0, 2, 1)
            out = torch.empty_like(x)  # mixed minibatch: each domain with its own statistics
            for d in domains.tolist():
                rows = batch_labels == d
                out[rows] = self.dsbn(x[rows], int(d)).to(out.dtype)
            return out.permute(0, 2, 1)
        if hasattr(self, "bn"):
            return self.bn(total.permute(0, 2, 1)).permute(0, 2, 1)
        return total

    def _encode(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None,
        batch_labels: torch.Tensor | None = None,
        pert_flags: torch.Tensor | None = None,
        pert_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Transformer output ``(B, L, D)``; ``src_key_padding_mask`` is True at pads."""
        return self._encode_with_gene_embs(
            src, values, src_key_padding_mask, batch_labels, pert_flags, pert_prior
        )[0]

    def _encode_with_gene_embs(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None,
        batch_labels: torch.Tensor | None = None,
        pert_flags: torch.Tensor | None = None,
        pert_prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_encode` and the gene token embeddings ``(B, L, D)`` that MVC reads.

        Returned, not kept on the module as the official ``cur_gene_token_embs``: a training
        step's tensor would hold its autograd graph (memory) and make the module impossible
        to ``copy.deepcopy`` (``ScGPT.load_pretrained(trained_model, ...)``).
        """
        total, gene_embs = self._embed_tokens(src, values, batch_labels, pert_flags, pert_prior)
        out = self.transformer_encoder(total, padding_attn_mask(src_key_padding_mask))
        return out, gene_embs

    def get_cell_embedding(
        self,
        layer_output: torch.Tensor,
        weights: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cell embedding from the last layer (``<cls>`` output by default), not normalised.

        ``weights`` (B, L) are the official ``w-pool`` weights; ``padding_mask`` (B, L), True at
        padding, tells ``gene-mean`` which positions to leave out (``None``: no padding). The
        first position is the ``<cls>`` token.
        """
        style = self.config.cell_emb_style
        if style == "cls":
            return layer_output[:, 0, :]
        if style == "avg-pool":
            return layer_output.mean(dim=1)
        if style == "gene-mean":
            genes = layer_output[:, 1:, :]
            if padding_mask is None:
                return genes.mean(dim=1)
            keep = (~padding_mask[:, 1:]).to(genes.dtype).unsqueeze(2)
            return (genes * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        if weights is None or weights.dim() != 2:
            msg = "cell_emb_style='w-pool' needs 2-D weights."
            raise ValueError(msg)
        emb = torch.sum(layer_output * weights.unsqueeze(2), dim=1)
        return nn.functional.normalize(emb, p=2, dim=1)

    # ---------------------------------------------------------------- heads
    def _heads(
        self,
        out: dict[str, torch.Tensor],
        transformer_output: torch.Tensor,
        gene_embs: torch.Tensor,
        values: torch.Tensor,
        batch_labels: torch.Tensor | None,
        CLS: bool,
        MVC: bool,
        ECS: bool,
        padding_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        cell_emb = self.get_cell_embedding(transformer_output, values, padding_mask)
        out["cell_emb"] = cell_emb
        batch_emb = self.batch_encoder(batch_labels) if self.config.use_batch_labels else None
        if CLS:
            out["cls_output"] = self.cls_decoder(cell_emb)
        if MVC:
            if not self.config.do_mvc:
                msg = "MVC=True but the model was built with do_mvc=False."
                raise ValueError(msg)
            mvc_in = cell_emb if batch_emb is None else torch.cat([cell_emb, batch_emb], dim=1)
            mvc = self.mvc_decoder(mvc_in, gene_embs)
            out["mvc_output"] = mvc["pred"]
            if "zero_probs" in mvc:
                out["mvc_zero_probs"] = mvc["zero_probs"]
        if ECS:
            out["loss_ecs"] = ecs_loss(cell_emb, self.config.ecs_threshold)
        if self.config.do_dab:
            out["dab_output"] = self.grad_reverse_discriminator(cell_emb)
        return out

    def _decode(
        self,
        transformer_output: torch.Tensor,
        batch_labels: torch.Tensor | None,
        values: torch.Tensor | None = None,
        pert_prior: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        x = transformer_output
        if self.config.use_batch_labels:
            batch_emb = self.batch_encoder(batch_labels)
            x = torch.cat([x, batch_emb.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=2)
        if self.config.perturbation:
            if values is None:
                msg = "The affine expression decoder needs the input values."
                raise ValueError(msg)
            dec = self.decoder(x, values)
            if pert_prior is not None:
                dec["pred"] = dec["pred"] + pert_prior
        else:
            dec = self.decoder(x)
        out = {"mlm_output": dec["pred"]}
        if "zero_probs" in dec:
            out["mlm_zero_probs"] = dec["zero_probs"]
        return out

    def forward(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None,
        batch_labels: torch.Tensor | None = None,
        CLS: bool = False,
        CCE: bool = False,
        MVC: bool = False,
        ECS: bool = False,
        do_sample: bool = False,
        pert_flags: torch.Tensor | None = None,
        pert_prior: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Bidirectional pass (masked-value training, fine-tuning, perturbation and inference).

        The arguments up to ``do_sample`` are the official ``TransformerModel.forward``'s, in
        its order. Returns ``mlm_output`` (B, L), ``cell_emb`` (B, D) and, when asked,
        ``cls_output``, ``loss_cce``, ``mvc_output``, ``loss_ecs``, ``dab_output`` (official
        output keys). ``CCE`` runs the encoder a second time and scores the two passes' cell
        embeddings with :func:`~omicformer.scgpt.module.cce_loss` (gathered over processes
        under ``torch.distributed`` in training, as the official code). ``do_sample`` (models
        with ``explicit_zero_prob``): ``mlm_output`` and ``mvc_output`` are multiplied by a
        Bernoulli draw of their non-zero probabilities, as the official code. ``pert_flags``
        (B, L) adds the perturbation flag embeddings (models built with ``perturbation=True``,
        where ``mlm_output`` is then ``coeff(h) * values + bias(h)``: the official
        ``TransformerGenerator``'s predicted post-perturbation expression). ``pert_prior``
        (B, L), for models built with ``perturbation_prior=True``: a prior of each gene's
        change, encoded as a second value and added to ``mlm_output``.
        """
        transformer_output, gene_embs = self._encode_with_gene_embs(
            src, values, src_key_padding_mask, batch_labels, pert_flags, pert_prior
        )
        out = self._decode(transformer_output, batch_labels, values, pert_prior)
        out = self._heads(
            out, transformer_output, gene_embs, values, batch_labels, CLS, MVC, ECS,
            padding_mask=src_key_padding_mask,
        )  # fmt: skip
        if CCE:
            again, _ = self._encode_with_gene_embs(
                src, values, src_key_padding_mask, batch_labels, pert_flags, pert_prior
            )
            cell2 = self.get_cell_embedding(again, values, src_key_padding_mask)
            cell1, cell2 = _gathered(out["cell_emb"], cell2, self.training)
            out["loss_cce"] = cce_loss(cell1, cell2)
        if do_sample and self.config.explicit_zero_prob:
            for key in ("mlm", "mvc"):
                if f"{key}_zero_probs" in out:
                    keep = torch.bernoulli(out[f"{key}_zero_probs"])
                    out[f"{key}_output"] = keep * out[f"{key}_output"]
        return out

    def generative_forward(
        self,
        pcpt_genes: torch.Tensor,
        pcpt_values: torch.Tensor,
        pcpt_key_padding_mask: torch.Tensor,
        gen_genes: torch.Tensor,
        gen_key_padding_mask: torch.Tensor,
        batch_labels: torch.Tensor | None = None,
        CLS: bool = False,
        MVC: bool = False,
        ECS: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Generative pass: predict the values of ``gen_genes`` from the known ``pcpt`` tokens.

        Known tokens (``<cls>`` first) = gene + value embedding; tokens to generate = gene
        embedding + the learned ``flag_encoder`` vector, no value. Attention follows
        :func:`generative_attn_mask`. Returns ``pcpt_preds`` (B, Lp), ``gen_preds`` (B, Lg),
        ``cell_emb`` and optional heads; ``mvc_output`` covers ``[pcpt | gen]``.
        """
        if not self.config.use_generative_training:
            msg = "generative_forward needs a model built with use_generative_training=True."
            raise ValueError(msg)
        pcpt_total, pcpt_gene = self._embed_tokens(pcpt_genes, pcpt_values, batch_labels)
        gen_gene = self.encoder(gen_genes)
        flag = self.flag_encoder(torch.ones(1, dtype=torch.long, device=gen_genes.device))
        gen_total = self._domain_norm(gen_gene + flag, batch_labels)
        Lp = pcpt_genes.shape[1]
        mask = generative_attn_mask(~pcpt_key_padding_mask, ~gen_key_padding_mask)
        transformer_output = self.transformer_encoder(torch.cat([pcpt_total, gen_total], 1), mask)
        out = self._decode(transformer_output, batch_labels)
        out["pcpt_preds"] = out["mlm_output"][:, :Lp]
        out["gen_preds"] = out["mlm_output"][:, Lp:]
        gene_embs = torch.cat([pcpt_gene, gen_gene], dim=1)
        return self._heads(
            out, transformer_output[:, :Lp], gene_embs, pcpt_values, batch_labels, CLS, MVC, ECS,
            padding_mask=pcpt_key_padding_mask,
        )  # fmt: skip


def _gathered(
    cell1: torch.Tensor, cell2: torch.Tensor, training: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views from every process in distributed training, as the official ``CCE``.

    This process's own tensors are kept in place, so that their gradients flow; outside
    distributed training the views are returned as given.
    """
    import torch.distributed as dist

    if not (training and dist.is_available() and dist.is_initialized()):
        return cell1, cell2
    views = []
    for cell in (cell1, cell2):
        parts = [torch.zeros_like(cell) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, cell.contiguous())
        parts[dist.get_rank()] = cell
        views.append(torch.cat(parts, dim=0))
    return views[0], views[1]
