"""Output heads of scGPT: expression decoder, MVC decoder, classifiers, batch discriminator, DSBN.

Submodule names follow the official implementation so official checkpoints load as they are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function


class ExprDecoder(nn.Module):
    """Per-token expression prediction (GEP) from transformer outputs."""

    def __init__(
        self, d_model: int, explicit_zero_prob: bool = False, use_batch_labels: bool = False
    ):
        super().__init__()
        d_in = d_model * 2 if use_batch_labels else d_model
        self.fc = _mlp_head(d_in, d_model)
        self.explicit_zero_prob = explicit_zero_prob
        if explicit_zero_prob:
            self.zero_logit = _mlp_head(d_in, d_model)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # (B, L, d_in) -> (B, L)
        out = {"pred": self.fc(x).squeeze(-1)}
        if self.explicit_zero_prob:
            out["zero_probs"] = torch.sigmoid(self.zero_logit(x).squeeze(-1))
        return out


class AffineExprDecoder(nn.Module):
    """Expression as an affine function of the input value: ``coeff(h) * x + bias(h)``.

    The official perturbation decoder (``TransformerGenerator.decoder``): two
    :class:`ExprDecoder` heads, ``coeff_decoder`` and ``bias_decoder``, on the transformer
    output ``h``; ``x`` is the token's input (control) expression.
    """

    def __init__(
        self, d_model: int, explicit_zero_prob: bool = False, use_batch_labels: bool = False
    ):
        super().__init__()
        self.coeff_decoder = ExprDecoder(d_model, explicit_zero_prob, use_batch_labels)
        self.bias_decoder = ExprDecoder(d_model, explicit_zero_prob, use_batch_labels)

    def init_identity(self) -> None:
        """Start as ``pred = values``: zero output weights, coefficient bias 1, bias bias 0.

        A fresh decoder then predicts "no change" and training learns the change, instead of
        first having to learn every gene's expression level from random weights.
        """
        with torch.no_grad():
            for head, value in ((self.coeff_decoder, 1.0), (self.bias_decoder, 0.0)):
                last = head.fc[-1]
                last.weight.zero_()
                last.bias.fill_(value)

    def forward(self, x: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
        coeff, bias = self.coeff_decoder(x), self.bias_decoder(x)
        out = {"pred": coeff["pred"] * values + bias["pred"]}
        if "zero_probs" in coeff:
            out["zero_probs"] = coeff["zero_probs"]
        return out


def _mlp_head(d_in: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_model),
        nn.LeakyReLU(),
        nn.Linear(d_model, d_model),
        nn.LeakyReLU(),
        nn.Linear(d_model, 1),
    )


class MVCDecoder(nn.Module):
    """Masked value prediction from the cell embedding (GEPC / MVC).

    ``"inner product"``: ``q_j = sigmoid(gene2query(emb_g(j)))``, ``x_j = q_j · W h_cell``.
    """

    def __init__(
        self,
        d_model: int,
        arch_style: str = "inner product",
        explicit_zero_prob: bool = False,
        use_batch_labels: bool = False,
    ):
        super().__init__()
        d_in = d_model * 2 if use_batch_labels else d_model
        self.arch_style = arch_style
        self.explicit_zero_prob = explicit_zero_prob
        if arch_style in ("inner product", "inner product, detach"):
            self.gene2query = nn.Linear(d_model, d_model)
            self.query_activation = nn.Sigmoid()
            self.W = nn.Linear(d_model, d_in, bias=False)
            if explicit_zero_prob:
                self.W_zero_logit = nn.Linear(d_model, d_in)
        elif arch_style == "concat query":
            self.gene2query = nn.Linear(d_model, 64)
            self.query_activation = nn.Sigmoid()
            self.fc1 = nn.Linear(d_model + 64, 64)
            self.hidden_activation = nn.PReLU()
            self.fc2 = nn.Linear(64, 1)
        elif arch_style == "sum query":
            self.gene2query = nn.Linear(d_model, d_model)
            self.query_activation = nn.Sigmoid()
            self.fc1 = nn.Linear(d_model, 64)
            self.hidden_activation = nn.PReLU()
            self.fc2 = nn.Linear(64, 1)
        else:
            msg = f"Unknown mvc_decoder_style {arch_style!r}."
            raise ValueError(msg)

    def forward(self, cell_emb: torch.Tensor, gene_embs: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cell_emb`` (B, d_in), ``gene_embs`` (B, L, D) -> ``{"pred": (B, L)}``."""
        if self.arch_style.startswith("inner product"):
            if self.arch_style.endswith("detach"):
                gene_embs = gene_embs.detach()
            query = self.query_activation(self.gene2query(gene_embs))  # (B, L, D)
            cell = cell_emb.unsqueeze(2)  # (B, d_in, 1)
            out = {"pred": torch.bmm(self.W(query), cell).squeeze(2)}
            if self.explicit_zero_prob:
                out["zero_probs"] = torch.sigmoid(
                    torch.bmm(self.W_zero_logit(query), cell).squeeze(2)
                )
            return out
        query = self.query_activation(self.gene2query(gene_embs))
        if self.arch_style == "concat query":
            cell = cell_emb.unsqueeze(1).expand(-1, gene_embs.shape[1], -1)
            h = self.hidden_activation(self.fc1(torch.cat([cell, query], dim=2)))
        else:
            h = self.hidden_activation(self.fc1(cell_emb.unsqueeze(1) + query))
        return {"pred": self.fc2(h).squeeze(2)}


class ClsDecoder(nn.Module):
    """Cell-type classifier on the cell embedding: ``(nlayers-1) x [Linear, ReLU, LayerNorm]`` + out."""

    def __init__(
        self, d_model: int, n_cls: int, nlayers: int = 3, activation: type[nn.Module] = nn.ReLU
    ):
        super().__init__()
        self._decoder = nn.ModuleList()
        for _ in range(nlayers - 1):
            self._decoder.append(nn.Linear(d_model, d_model))
            self._decoder.append(activation())
            self._decoder.append(nn.LayerNorm(d_model))
        self.out_layer = nn.Linear(d_model, n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._decoder:
            x = layer(x)
        return self.out_layer(x)


class _GradReverse(Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.lambd, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``-lambd`` backward (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, lambd)


class AdversarialDiscriminator(ClsDecoder):
    """Batch classifier behind a gradient-reversal layer (DAB objective)."""

    def __init__(self, d_model: int, n_cls: int, nlayers: int = 3, reverse_grad: bool = True):
        super().__init__(d_model, n_cls, nlayers, activation=nn.LeakyReLU)
        self.reverse_grad = reverse_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reverse_grad:
            x = grad_reverse(x, 1.0)
        return super().forward(x)


class DomainSpecificBatchNorm1d(nn.Module):
    """One BatchNorm1d per batch/domain (``dsbn.bns.{i}``), chosen by the batch's domain label."""

    def __init__(
        self, num_features: int, num_domains: int, eps: float = 6.1e-5, affine: bool = False
    ):
        super().__init__()
        self.num_domains = num_domains
        self.bns = nn.ModuleList(
            nn.BatchNorm1d(num_features, eps=eps, affine=affine) for _ in range(num_domains)
        )

    def forward(self, x: torch.Tensor, domain_label: int) -> torch.Tensor:  # x: (B, D, L)
        if not 0 <= domain_label < self.num_domains:
            msg = f"domain label {domain_label} out of range 0..{self.num_domains - 1}."
            raise ValueError(msg)
        return self.bns[domain_label](x)
