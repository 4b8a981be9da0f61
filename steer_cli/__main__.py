"""``python -m steer_cli``: the command line, as ``torchrun`` and ``accelerate launch`` start it."""

from steer_cli.cli import main

main()
