"""The package's top level exports every method, as the README's ``from ssl_lightning import ...`` assumes."""

import inspect

from lightning.pytorch import LightningModule

import ssl_lightning
import ssl_lightning.methods


def test_every_method_is_importable_from_the_top_level():
    methods = {
        name
        for name in ssl_lightning.methods.__all__
        if inspect.isclass(cls := getattr(ssl_lightning.methods, name))
        and issubclass(cls, LightningModule)
        and not inspect.isabstract(cls)
        and cls.__module__ != "ssl_lightning.methods.base"
    }
    assert {"VICReg", "BarlowTwins", "BlockwiseBarlowTwins", "IJEPA", "FlexPredict"} <= methods
    assert methods <= set(ssl_lightning.__all__)
    assert all(getattr(ssl_lightning, name) is getattr(ssl_lightning.methods, name) for name in methods)
