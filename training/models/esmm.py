"""ESMM (Ma et al. 2018, "Entire Space Multi-Task Model"): a CTR tower and a CVR tower over
shared field embeddings, trained on every impression with two labels, the click and the
click-and-purchase, where pCTCVR = pCTR x pCVR.

A CVR model trained on clicked impressions only learns from a small, selected sample and is
then asked about every impression (selection bias, sparsity). ESMM never fits pCVR to a label
directly: the purchase label supervises the product pCTR x pCVR over the whole impression
space, and the embeddings the click label trains carry over to the CVR tower.

Both towers take the (cat, num) inputs of the CTR models (``training.models.ctr``). With a
position field the CTR tower is a :class:`PositionBias` (the position changes whether an ad
is seen, not what a click is worth) and the CVR tower never sees the position.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.ctr import CTRSize, FieldEmbeddings, LogisticRegression, PositionBias, _mlp


class Tower(nn.Module):
    """One task's logit over (possibly shared) field embeddings: its own hashed linear part,
    an FM pairwise term with its own weight per embedding dimension, and an MLP."""

    def __init__(
        self, embed: FieldEmbeddings, n_buckets: int, n_fields: int, n_numeric: int, size: CTRSize
    ) -> None:
        super().__init__()
        self.embed = embed
        self.linear = LogisticRegression(n_buckets, n_fields, n_numeric)
        self.pair_weight = nn.Parameter(torch.ones(size.dim))
        self.deep, width = _mlp((n_fields + n_numeric) * size.dim, size.mlp, size.dropout)
        self.head = nn.Linear(width, 1)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        e = self.embed(cat, num)
        # sum_{i<j} <e_i, w * e_j>: FM's pairwise sum with a per-dimension weight.
        pairs = 0.5 * ((e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)) * self.pair_weight).sum(dim=1)
        deep = self.head(self.deep(e.flatten(1))).squeeze(-1)
        return self.linear(cat, num) + pairs + deep


class Without(nn.Module):
    """A model over every field but one (the position): drops that column first."""

    def __init__(self, model: nn.Module, n_fields: int, dropped: int) -> None:
        super().__init__()
        self.model = model
        keep = [j for j in range(n_fields) if j != dropped]
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.int64))

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.model(cat.index_select(1, self.keep), num)


class Transfer(nn.Module):
    """The CVR logit plus a learnt multiple of the CTR tower's relevance logit: what makes a
    click likely (the user's taste for the item) mostly makes a purchase likely too, and the
    click label has several times the purchase label's rows to learn it from."""

    def __init__(self, cvr: nn.Module, relevance: nn.Module) -> None:
        super().__init__()
        self.cvr = cvr
        self.relevance = relevance
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.cvr(cat, num) + self.weight * self.relevance(cat, num)


class ESMM(nn.Module):
    """(CTR logit, CVR logit) per row; ``cvr`` alone maps (cat, num) to the CVR logit and is
    what ships beside the served pCTR."""

    def __init__(
        self,
        n_buckets: int,
        n_fields: int,
        n_numeric: int,
        size: CTRSize | None = None,
        position_field: int | None = None,
        transfer: bool = False,
    ) -> None:
        super().__init__()
        size = size or CTRSize()
        tower_fields = n_fields - (position_field is not None)
        self.embed = FieldEmbeddings(n_buckets, n_numeric, size.dim)
        ctr = Tower(self.embed, n_buckets, tower_fields, n_numeric, size)
        cvr: nn.Module = Tower(self.embed, n_buckets, tower_fields, n_numeric, size)
        if transfer:
            cvr = Transfer(cvr, ctr)
        if position_field is None:
            self.ctr: nn.Module = ctr
            self.cvr: nn.Module = cvr
        else:
            self.ctr = PositionBias(ctr, n_buckets, n_fields, position_field)
            self.cvr = Without(cvr, n_fields, position_field)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctr(cat, num), self.cvr(cat, num)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Mächler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-x.exp()))


def esmm_loss(
    ctr_logit: torch.Tensor, cvr_logit: torch.Tensor, click: torch.Tensor, converted: torch.Tensor
) -> torch.Tensor:
    """Mean of logloss(pCTR, click) + logloss(pCTR x pCVR, click and purchase), in log space."""
    click_loss = nn.functional.binary_cross_entropy_with_logits(ctr_logit, click)
    log_p = nn.functional.logsigmoid(ctr_logit) + nn.functional.logsigmoid(cvr_logit)
    ctcvr_loss = -(converted * log_p + (1.0 - converted) * log1mexp(log_p)).mean()
    return click_loss + ctcvr_loss


class WithCVR(nn.Module):
    """(pCTR, pCVR) from one graph: the served CTR model beside the calibrated CVR tower, both
    over the same (cat, num) inputs, so the engine gets both in one onnxruntime run."""

    def __init__(self, ctr: nn.Module, cvr: nn.Module) -> None:
        super().__init__()
        self.ctr = ctr
        self.cvr = cvr

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctr(cat, num), self.cvr(cat, num)
