"""The model extension point: what a network over stock-panel windows gives the trainer and the Qlib adapter.

A new model is one class that satisfies :class:`WindowNetwork`: built from a dataclass config
that :meth:`WindowNetwork.configure` sizes to the data, it maps a window of features to one score
per stock and, given the next returns, to a loss made of named terms with explicit weights.
:class:`storm_bt.model.qlib_model.WindowModel` then trains it under Qlib (``qrun``) with the shared
trainer: checkpoints, resume, valid-RankIC selection, gradient norms per term. STORM and FactorVAE
are two such classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from qlib.utils import get_callable_kwargs
from torch import Tensor, nn

__all__ = ["WindowNetwork", "WindowOutput", "network_class", "weighted_loss"]


class WindowOutput(NamedTuple):
    pred: Tensor  # (B, N) score per stock, for the window's last day
    loss: Tensor  # scalar: the weighted sum of loss_terms (0 without labels)
    loss_terms: dict[str, Tensor]  # unweighted terms, each named in the network's loss_weights
    embeddings: Any = None  # what the factor store exports (STORM's StormEmbeddings), or None


@runtime_checkable
class WindowNetwork(Protocol):
    """A ``torch.nn.Module`` over windows ``x`` (B, T, N, F) with a present-stock ``mask`` (B, T, N).

    ``forward(x, mask, y)`` returns a :class:`WindowOutput`; ``y`` (B, N) is the next returns
    (NaN where unknown) in training and ``None`` at inference. Training with
    ``TrainConfig.permute_stocks`` shuffles the stock axis and calls ``forward(x, mask, y, stock_ids=order)``
    with the stock (N,) in each column, so a network that takes it can keep per-stock parameters on
    the stock, not its column. Two optional methods feed the
    training history: ``encoders()`` (name -> module: each loss term's gradient norm on it is
    logged per epoch) and ``quantizers()`` (name -> :class:`~storm_bt.model.quantizer.VectorQuantizer`:
    code usage and perplexity per epoch).
    A third, ``pretraining()``, gives the parameters and the loss weights of a self-supervised
    first stage (``TrainConfig.pretrain_epochs``); a network without it trains in one stage.
    """

    cfg: Any  # a dataclass: its fields fingerprint checkpoints and are saved with the best weights
    window: int  # days of history per sample
    loss_weights: Mapping[str, float]  # every term forward() can return -> its weight in the loss

    @classmethod
    def configure(cls, n_stocks: int, n_features: int, **options: Any) -> Any:
        """The config for data of this shape; ``options`` come from the workflow YAML (unknown keys raise)."""

    def forward(self, x: Tensor, mask: Tensor, y: Tensor | None = None) -> WindowOutput: ...


def weighted_loss(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Sum of ``weights[name] * term``; a term without a weight is an error, not a silent 1 or 0."""
    missing = sorted(set(terms) - set(weights))
    if missing:
        raise KeyError(f"Loss term(s) {missing} have no weight in loss_weights ({sorted(weights)}).")
    return sum(weights[name] * value for name, value in terms.items())


def network_class(spec: str | Mapping[str, Any] | type) -> type[nn.Module]:
    """The network class a workflow names, as Qlib names classes: ``"pkg.module.Class"``, or
    ``{class: Class, module_path: pkg.module | path/to/file.py}``, or the class itself."""
    if isinstance(spec, type):
        spec = {"class": spec}
    cls, _ = get_callable_kwargs(dict(spec) if isinstance(spec, Mapping) else spec)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "configure")):
        raise TypeError(f"{spec!r} is not a WindowNetwork: expected an nn.Module class with configure().")
    return cls
