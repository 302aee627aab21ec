"""Subcommands of ``tccc``: each module defines NAME, HELP, ORDER, add_arguments(p), run(args).

Modules here are discovered automatically; adding a command means adding a module.
"""
