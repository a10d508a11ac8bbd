"""The command floor: the console commands and everything that knows Hydra's command line.

    train, sample, prepare, export, eval, report   one module per command: a thin @hydra.main
                                                   entry calling a plain function of the floors below
    launch       what every command does around its task: help, free text, one-line refusals,
                 exit codes, the run folder a refused command leaves behind
    help         --help, read from conf/ and the schemas
    refusals     Hydra's refusals of a command line as one line, and what Hydra lets through
    hydra_compat the few places that lean on Hydra's private API or its message texts
    free_text    prompts and other free text taken verbatim
    run_folders  the resolvers that name run folders, and choosing the run to resume
    sweeps       job folders, Optuna's search space, the report at a sweep's end
    slurm        checks made before anything is submitted to SLURM

The functions below are the console scripts of pyproject.toml (`nanogpt-train` is `train`);
`python -m nanogpt.train` (and so on) runs the same. Each imports its command's module only
when called, and a command's module imports torch only once its task runs, so that --help, tab
completion and a refused command line answer without loading torch.
"""

from __future__ import annotations


def train() -> None:
    from nanogpt.cli.train import cli

    cli()


def sample() -> None:
    from nanogpt.cli.sample import cli

    cli()


def prepare() -> None:
    from nanogpt.cli.prepare import cli

    cli()


def export() -> None:
    from nanogpt.cli.export import cli

    cli()


def evaluate() -> None:
    from nanogpt.cli.eval import cli

    cli()


def report() -> None:
    from nanogpt.cli.report import cli

    cli()
