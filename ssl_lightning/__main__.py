"""``python -m ssl_lightning`` is the ``ssl-lightning`` command."""

from ssl_lightning.cli import main

main()
