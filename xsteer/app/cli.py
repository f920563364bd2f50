"""The ``xsteer`` command line: the group, and every command registered on it. Each command lives with its
kind (``cli_*.py``), parses its options and calls :mod:`xsteer.app.steps` or the library.

Everything a user can get wrong is checked before a model loads (option ranges, λ grids, file formats,
output paths), and an expected error is one line and exit code 1; an unexpected one keeps its traceback,
since it is a bug. No output file is half-written (every write is atomic), and no output may overwrite an
input.
"""

from __future__ import annotations

import os

import click

from xsteer.app.cli_ablate import ablate_cmd
from xsteer.app.cli_analysis import report_cmd, similarity_cmd
from xsteer.app.cli_check import check_model_cmd
from xsteer.app.cli_evaluate import evaluate_cmd, tune_cmd
from xsteer.app.cli_extract import extract_cmd
from xsteer.app.cli_fidelity import fidelity_cmd
from xsteer.app.cli_info import info_cmd, models_cmd
from xsteer.app.cli_interop import export_cmd, export_model_cmd, import_cmd
from xsteer.app.cli_runs import demo_cmd, grid_cmd
from xsteer.app.cli_transfer import transfer_cmd

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="xsteer")
def main() -> None:
    """Transfer steering vectors (concepts) from a parent LM into smaller child LMs, and measure what crosses."""


for _command in (
    models_cmd,
    info_cmd,
    extract_cmd,
    transfer_cmd,
    evaluate_cmd,
    tune_cmd,
    ablate_cmd,
    similarity_cmd,
    fidelity_cmd,
    demo_cmd,
    report_cmd,
    grid_cmd,
    export_cmd,
    export_model_cmd,
    import_cmd,
    check_model_cmd,
):
    main.add_command(_command)

if __name__ == "__main__":
    main()
