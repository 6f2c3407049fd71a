"""Lightning callbacks that connect training to the zoo."""

from __future__ import annotations

import lightning as L

from asdzoo.hub import save_pretrained


class SavePretrained(L.Callback):
    """At the end of ``fit``, write the trained model with ``save_pretrained`` (then ``asdzoo install DIR``)."""

    def __init__(self, dirpath: str, name: str | None = None):
        self.dirpath, self.name = dirpath, name

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            pl_module.on_train_end()  # make sure end-of-training state (e.g. covariances) is in place
            save_pretrained(pl_module, self.dirpath, self.name)
