"""Conditional GAN for cGAN-KD: BigGAN-style G with conditional BN, SN projection D, hinge
loss, DiffAugment and an EMA generator; class labels, or float labels in [0, 1] (CcGAN, vicinal
D losses). Plain PyTorch, no Ray."""

from .diffaugment import diff_augment
from .discriminator import ProjectionDiscriminator
from .ema import EMA, recalibrate_bn, unwrap
from .generator import CondGenerator, spatial_plan
from .grid import save_grid_png
from .label_embed import LabelMLP, SinusoidalEmbedding, fit_y2h, make_label_embedding, projection_embedding
from .losses import LeCam, d_loss, g_loss
from .loop import GANState, build_gan, gan_step, generate, train_gan
from .routed import ClassRoutedGenerator
from .vicinal import VicinalSampler, Vicinity, resolve_vicinity, rule_of_thumb, vicinal_weights

__all__ = [
    "ClassRoutedGenerator", "CondGenerator", "ProjectionDiscriminator", "EMA", "LeCam", "GANState", "build_gan", "d_loss",
    "diff_augment", "g_loss", "gan_step", "generate", "recalibrate_bn", "save_grid_png",
    "spatial_plan", "train_gan", "unwrap",
    # CcGAN (continuous labels)
    "LabelMLP", "SinusoidalEmbedding", "VicinalSampler", "Vicinity", "fit_y2h", "make_label_embedding",
    "projection_embedding", "resolve_vicinity", "rule_of_thumb", "vicinal_weights",
]
