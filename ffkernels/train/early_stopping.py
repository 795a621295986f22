"""Early stopping as the ForwardGNN reference does it: validate every k epochs, keep the best
state, stop after ``patience`` validations without improvement, restore the best state."""
from __future__ import annotations

import copy


class EarlyStopping:
    """Track the best validation score and the module state that produced it.

    ``step(score, module)`` returns True when training should stop. ``restore(module)`` loads
    the best state back. Higher scores are better; ties do not count as improvement.
    """

    def __init__(self, patience: int = 100):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.best_score = float("-inf")
        self.best_epoch = -1
        self.best_state = None
        self.bad_validations = 0

    def step(self, score: float, module, epoch: int = -1) -> bool:
        if score > self.best_score:
            self.best_score = score
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(module.state_dict())
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        return self.bad_validations >= self.patience

    def restore(self, module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"patience": self.patience, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)
