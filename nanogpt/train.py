"""`python -m nanogpt.train`, the same as the console command `nanogpt-train`: nanogpt.cli.train."""

from nanogpt.cli.train import cli

if __name__ == "__main__":
    cli()
