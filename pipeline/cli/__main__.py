"""``python -m pipeline.cli``: the same as the ``plantpipe`` command."""

from pipeline.cli import main

main()
