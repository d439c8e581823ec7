"""Class-conditional GAN for cGAN-KD: BigGAN-style G with conditional BN, SN projection D, hinge
loss, DiffAugment and an EMA generator. Plain PyTorch, no Ray."""

from .diffaugment import diff_augment
from .discriminator import ProjectionDiscriminator
from .ema import EMA, recalibrate_bn, unwrap
from .generator import CondGenerator, spatial_plan
from .grid import save_grid_png
from .losses import LeCam, d_loss, g_loss
from .loop import GANState, build_gan, gan_step, generate, train_gan
from .routed import ClassRoutedGenerator

__all__ = [
    "ClassRoutedGenerator", "CondGenerator", "ProjectionDiscriminator", "EMA", "LeCam", "GANState", "build_gan", "d_loss",
    "diff_augment", "g_loss", "gan_step", "generate", "recalibrate_bn", "save_grid_png",
    "spatial_plan", "train_gan", "unwrap",
]
