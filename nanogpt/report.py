"""`python -m nanogpt.report`, the same as the console command `nanogpt-report`: nanogpt.cli.report."""

from nanogpt.cli.report import cli

if __name__ == "__main__":
    cli()
