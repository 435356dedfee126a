"""The ``ambidex`` command."""
