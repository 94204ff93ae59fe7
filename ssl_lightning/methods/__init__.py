"""One LightningModule per self-supervised method."""

from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.vicreg import VICReg

__all__ = ["SSLMethod", "VICReg"]
