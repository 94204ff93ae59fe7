"""ssl_lightning: self-supervised learning of image representations for PyTorch Lightning."""

__version__ = "0.1.0.dev0"
