"""ssl_lightning: self-supervised learning of image representations for PyTorch Lightning.

Methods are LightningModules (``from ssl_lightning import VICReg``); DataModules and view recipes
live in :mod:`ssl_lightning.data`, online-evaluation callbacks in :mod:`ssl_lightning.callbacks`.
"""

from ssl_lightning.methods import IJEPA, BarlowTwins, BlockwiseBarlowTwins, FlexPredict, LeJEPA, VICReg

__version__ = "0.1.0.dev0"

__all__ = ["IJEPA", "BarlowTwins", "BlockwiseBarlowTwins", "FlexPredict", "LeJEPA", "VICReg", "__version__"]
