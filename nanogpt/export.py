"""`python -m nanogpt.export`, the same as the console command `nanogpt-export`: nanogpt.cli.export."""

from nanogpt.cli import export

if __name__ == "__main__":
    export()
