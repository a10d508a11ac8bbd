"""`python -m nanogpt.train`, the same as the console command `nanogpt-train`: nanogpt.cli.train."""

from nanogpt.cli import train

if __name__ == "__main__":
    train()
