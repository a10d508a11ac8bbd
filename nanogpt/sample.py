"""`python -m nanogpt.sample`, the same as the console command `nanogpt-sample`: nanogpt.cli.sample."""

from nanogpt.cli.sample import cli

if __name__ == "__main__":
    cli()
