"""`python -m nanogpt.prepare`, the same as the console command `nanogpt-prepare`: nanogpt.cli.prepare."""

from nanogpt.cli import prepare

if __name__ == "__main__":
    prepare()
