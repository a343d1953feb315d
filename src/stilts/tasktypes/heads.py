"""The paper's head for most task types: dropout and one linear layer on the encoder's top layer."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """Reads the first token (or every token, `per_token`); `outputs` scores per position (None: one per
    label of the task)."""

    per_token = False
    outputs: int | None = None

    def __init__(self, hidden_size: int, task, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, task.num_labels if self.outputs is None else self.outputs)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.out(self.dropout(hidden if self.per_token else hidden[:, 0]))
