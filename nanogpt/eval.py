"""`python -m nanogpt.eval`, the same as the console command `nanogpt-eval`: nanogpt.cli.eval."""

from nanogpt.cli import evaluate

if __name__ == "__main__":
    evaluate()
