"""``python -m gateway`` is ``passerelle``."""

from .cli import main

main()
