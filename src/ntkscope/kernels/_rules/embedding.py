"""``nn.Embedding``: ``h_p = W[t_p]``, a table row per token id.

The weight's gradient is a scatter of the output gradients by token id, i.e. the
`Factors` of one-hot inputs e_{t_p}: ``Θ_W(x, x')_{oo'} = Σ_{p,q} [t_p = t'_q]
(g_{o,p} · g'_{o',q})``, a Gram over positions with equal tokens, without forming the
vocabulary-sized Jacobian. Positions holding ``padding_idx`` get no gradient (their g is
zeroed). ``max_norm`` (which rewrites the table during the forward pass) and
``scale_grad_by_freq`` (which scales gradients by counts over the batch) are refused.
"""

from __future__ import annotations

import torch

from ntkscope.kernels._rules._base import Factors, Rule, Term


class EmbeddingRule(Rule):
    def check(self) -> None:
        if self.module.max_norm is not None:
            raise self.refuse("max_norm renormalizes the table inside the forward pass")
        if self.module.scale_grad_by_freq:
            raise self.refuse("scale_grad_by_freq couples the examples of a batch")

    def terms(self, a: torch.Tensor, g: torch.Tensor) -> list[Term]:
        n, n_out = a.shape[0], g.shape[1]
        ids = a.reshape(n, -1)
        g = g.reshape(n, n_out, ids.shape[1], g.shape[-1])
        if self.module.padding_idx is not None:
            g = g * (ids != self.module.padding_idx)[:, None, :, None].to(g.dtype)
        return [Factors(ids, g, vocab=self.module.num_embeddings)]
