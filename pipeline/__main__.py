"""`python -m bbdeploy` runs the CLI."""

from bbdeploy.cli import main

main()
