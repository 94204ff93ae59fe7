"""One LightningModule per self-supervised method."""

from ssl_lightning.methods.barlow_twins import BarlowTwins
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.blockwise import BlockwiseBarlowTwins
from ssl_lightning.methods.flexpredict import FlexPredict
from ssl_lightning.methods.ijepa import IJEPA
from ssl_lightning.methods.lejepa import LeJEPA
from ssl_lightning.methods.vicreg import VICReg

__all__ = ["IJEPA", "BarlowTwins", "BlockwiseBarlowTwins", "FlexPredict", "LeJEPA", "SSLMethod", "VICReg"]
