"""``python -m isograd.cli``: the `isograd` command."""

from . import main

main()
