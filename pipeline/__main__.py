"""`python -m bbdeploy` runs the CLI."""

from .cli import main

main()
