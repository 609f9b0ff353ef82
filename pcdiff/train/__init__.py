"""Training: the masking noise (:mod:`.noise`), run settings (:mod:`.config`), the one training loop
(:mod:`.loop`), the backbone's trainer (:mod:`.backbone`), the autoregressive model's
(:mod:`.autoregressive`), the CoDD layer's objective and trainer
(:mod:`.objective`, :mod:`.layer`) with cached backbone outputs (:mod:`.cache`), checkpoints
(:mod:`.checkpoint`, :mod:`.optim`, :mod:`.resume`) and DDP (:mod:`.distributed`)."""
from .autoregressive import (AutoregressiveTrainingConfig, heldout_next_token_loss, next_token_loss,
                             train_autoregressive)
from .backbone import heldout_loss, masked_diffusion_loss, train_backbone
from .checkpoint import CheckpointError, load_checkpoint, load_layer, save_checkpoint, save_layer
from .config import BackboneTrainingConfig, LayerTrainingConfig
from .layer import train_codd_layer
from .noise import MIN_T, mask_exactly, mask_noise
from .objective import check_compatible, evaluate_nll, heldout_objective

__all__ = ["train_backbone", "masked_diffusion_loss", "heldout_loss", "train_codd_layer", "BackboneTrainingConfig",
           "LayerTrainingConfig", "evaluate_nll", "heldout_objective", "check_compatible", "mask_noise",
           "mask_exactly", "MIN_T", "CheckpointError", "save_checkpoint", "load_checkpoint", "save_layer",
           "load_layer", "train_autoregressive", "AutoregressiveTrainingConfig", "next_token_loss",
           "heldout_next_token_loss"]
