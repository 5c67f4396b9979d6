"""`asyncinf clean`: remove shared-memory objects left behind by runs that died."""

from __future__ import annotations

from typing import Annotated

import typer

from asyncinf.transports.shm import names


def clean(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
) -> None:
    """Remove `/dev/shm/asyncinf.*` segments and semaphores whose run's process is gone.

    Objects of live runs are never touched (nor are names that carry no pid). A supervisor
    does this at start-up too; run it by hand after a crash or a kill -9.
    """
    stale = names.clean_stale(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for name in stale:
        typer.echo(f"{verb} /dev/shm/{name}")
    left = len(names.list_objects()) - (len(stale) if dry_run else 0)
    typer.echo(
        f"{verb} {len(stale)} stale object(s); {left} left (of live runs, or with no pid in the name)"
    )
