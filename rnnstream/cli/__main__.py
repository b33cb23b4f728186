"""``python -m rnnstream.cli``: the command line without the installed script."""

from rnnstream.cli import main

main()
