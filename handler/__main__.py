"""`python -m handler` -> the command-line interface."""

from handler.cli import main

if __name__ == "__main__":
    main()
