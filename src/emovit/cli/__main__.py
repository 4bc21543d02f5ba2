"""``python -m emovit.cli`` (and ``torchrun -m emovit.cli``): the ``emovit`` command."""

from emovit.cli import main

if __name__ == "__main__":
    main(prog_name="emovit")
