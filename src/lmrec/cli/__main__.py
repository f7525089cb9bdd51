"""`python -m lmrec.cli`: the `lmrec` command."""

from lmrec.cli import main

if __name__ == "__main__":
    main()
