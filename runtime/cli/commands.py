"""The `asyncinf` command's typer app. Each command group has its own module; this wires them.

Commands stay thin: parse flags, build a config, call the library, exit with a documented code.
Logging is configured here and nowhere else.
"""

from __future__ import annotations

import logging

import typer

from asyncinf.runtime.supervise import stop_signals

app = typer.Typer(
    name="asyncinf",
    help="Run robot policies asynchronously: a fixed-rate control loop fed by a policy server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow instead of keeping line breaks
)


# The commands that stop cleanly on a stop signal held since start-up (stop_signals.py).
STOPPABLE = {"up", "serve"}


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    if ctx.invoked_subcommand not in STOPPABLE:
        stop_signals.release()
    # The supervisor hands this level on to its children (supervise/protocol.py).
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _register() -> None:
    from asyncinf.runtime.cli.bench import bench_app  # noqa: PLC0415
    from asyncinf.runtime.cli.bench_e2e import e2e  # noqa: PLC0415
    from asyncinf.runtime.cli.clean import clean  # noqa: PLC0415
    from asyncinf.runtime.cli.robot import robot_app  # noqa: PLC0415
    from asyncinf.runtime.cli.serve import serve  # noqa: PLC0415
    from asyncinf.runtime.cli.status import status  # noqa: PLC0415
    from asyncinf.runtime.cli.systemd import systemd  # noqa: PLC0415
    from asyncinf.runtime.cli.up import DOTTED_FLAGS, up  # noqa: PLC0415

    app.command("up", context_settings=DOTTED_FLAGS)(up)
    app.command("serve", context_settings=DOTTED_FLAGS)(serve)
    app.command("systemd")(systemd)
    app.command("status")(status)
    app.add_typer(robot_app, name="robot")
    bench_app.command("e2e", context_settings=DOTTED_FLAGS)(e2e)
    app.add_typer(bench_app, name="bench")
    app.command("clean")(clean)


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the command line (`argv`, default sys.argv[1:]); returns the exit code.

    A usage error (a bad value for a typed option, an unknown option) is printed as one
    line, `error: …`, like every other bad-input message, rather than as a box: it reads
    the same in a terminal and in the journal.
    """
    try:
        code = app(args=argv, prog_name="asyncinf", standalone_mode=False)
    except typer.TyperException as exc:  # click's UsageError and BadParameter
        message = exc.format_message()
        if "\n" in message.strip():  # the help of a group called without a command
            exc.show()
        else:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    return code if isinstance(code, int) else 0
