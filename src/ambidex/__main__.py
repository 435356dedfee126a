"""``python -m ambidex``: the same as the ``ambidex`` command."""

from ambidex.cli import main

main()
