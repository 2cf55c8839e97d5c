"""`python -m dinosr` is the same as the `dinosr` console command."""

from dinosr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
