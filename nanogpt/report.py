"""`python -m nanogpt.report`, the same as the console command `nanogpt-report`: nanogpt.cli.report."""

from nanogpt.cli import report

if __name__ == "__main__":
    report()
