"""The names and formats of metrics, shared by every report about a model: the model card and
the evaluation's report."""

from __future__ import annotations

import math

INTRINSIC = (  # (key, label, higher is better)
    ("mlm_loss", "MLM loss", False),
    ("mlm_acc", "MLM accuracy", True),
    ("perplexity", "perplexity", False),
    ("nsp_acc", "NSP/SOP accuracy", True),
)


def fmt(value: float | None, metric: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if metric == "perplexity":
        return f"{value:,.1f}"
    if metric == "examples" or metric == "masked_tokens":
        return f"{value:,.0f}"
    return f"{value:.4f}"
