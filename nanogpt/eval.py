"""`python -m nanogpt.eval`, the same as the console command `nanogpt-eval`: nanogpt.cli.eval."""

from nanogpt.cli.eval import cli

if __name__ == "__main__":
    cli()
