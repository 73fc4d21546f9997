"""The `mprnet` command line: parsing, messages and exit codes only.

Heavy modules (torch, the model, image I/O) are imported inside commands so
that `mprnet --help` and `mprnet --version` stay instant. One module per command
group; this one wires them together and owns the entry point.

Exit codes: 0 success, 1 failure (some inputs failed, weights problems),
2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mprnet_cli import __version__
from mprnet_cli.cli import bench, restore, serve, train, weights
from mprnet_cli.cli import eval as evaluation
from mprnet_cli.cli.output import INTERRUPTED_EXIT, plain
from mprnet_cli.tasks import Task, what_tasks_remove

app = typer.Typer(
    name="mprnet",
    help=f"Remove {what_tasks_remove()} from photos with MPRNet (Zamir et al., CVPR 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's help renderer alone costs more import time than the
    # rest of `mprnet --help` together.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"mprnet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Remove rain, motion blur and noise from photos with MPRNet."""


for _task in Task:
    restore.register(app, _task)
app.command("train", short_help="Train an MPRNet of any width (resumable); writes .safetensors.")(
    train.train_command
)
app.command("eval", short_help="PSNR/SSIM of restored vs clean images (the paper's protocol).")(
    evaluation.eval_command
)
app.command(
    "bench", short_help="Speed per task (MP/s, GFLOP/s, memory); modes compared in one run."
)(bench.bench_command)
app.command("serve", short_help="HTTP API and web page restoring images; networks kept warm.")(
    serve.serve_command
)
app.add_typer(weights.app, name="weights")


def main() -> None:
    """Console-script entry point: SIGTERM and SIGHUP handled like Ctrl-C, usage errors as
    one line."""
    import signal

    from mprnet_cli.errors import Terminated, raise_terminated

    for name in ("SIGTERM", "SIGHUP"):  # SIGHUP: the terminal or ssh session went away
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), raise_terminated)
    try:
        # standalone_mode=False: Typer's own parsing errors come back to us as exceptions,
        # so they get the same one-line form as mprnet's (instead of a usage block).
        code = app(standalone_mode=False)
    except typer.Abort:  # end of input at a prompt
        print("mprnet: error: aborted", file=sys.stderr, flush=True)
        code = 1
    except typer.TyperException as exc:  # option/argument validation
        code = int(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        show = getattr(exc, "show", None)
        if ctx is not None and callable(show) and str(exc) == ctx.get_help():
            show()  # a group run without a command: its help, as Typer prints it
        else:
            print(f"mprnet: error: {_usage_line(exc)}", file=sys.stderr, flush=True)
    if code == INTERRUPTED_EXIT and Terminated.received:
        # Outside `errors_to_exit` (parsing, imports) Typer turns any KeyboardInterrupt,
        # ours included, into a silent exit 130: keep SIGTERM's own code there too.
        code = Terminated.exit_code
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc: Exception) -> str:
    """Typer's 'Usage/Try/Error' block as one line, with the help hint at its end."""
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    text = text[:1].lower() + text[1:].rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "mprnet"
    # "Did you mean 'derain'?" ends a sentence: the hint starts the next one
    see = " See" if text.endswith("?") else "; see"
    return f"{plain(text)}{see} `{command} --help`"
