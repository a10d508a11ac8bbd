"""`python -m nanogpt.sample`, the same as the console command `nanogpt-sample`: nanogpt.cli.sample."""

from nanogpt.cli import sample

if __name__ == "__main__":
    sample()
