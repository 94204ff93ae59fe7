"""Online-evaluation callbacks. They read the `features` a method returns; none runs a forward pass."""

from ssl_lightning.callbacks.linear_probe import OnlineLinearProbe

__all__ = ["OnlineLinearProbe"]
