"""``site-client audit``: every message that reached or left this site; ``--verify`` checks the hash chain."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from site_client.cli import app
from site_client.flower.audit import AUDIT_FILE, AuditLogError, read_audit, verify_audit
from site_client.flower.state import DEFAULT_WORK_DIR


def _shapes(record: dict) -> str:
    arrays = record.get("arrays", {})
    return ", ".join(f"{k}{tuple(v['shape'])}" for k, v in sorted(arrays.items())) or "-"


@app.command("audit")
def audit(
    work_dir: Path = typer.Option(DEFAULT_WORK_DIR, "--work-dir", help="Site state folder (as given to join)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw records, one JSON object a line."),
    verify: bool = typer.Option(False, "--verify", help="Check the hash chain: exit 1 naming every edited, removed or inserted record."),
) -> None:
    """List every request this site received and every reply it sent; --verify checks the hash chain."""
    if verify:
        verdict = verify_audit(work_dir)
        for problem in verdict.problems:
            typer.echo(f"TAMPERED: {work_dir / AUDIT_FILE}: {problem}", err=True)
        if not verdict.intact:
            raise typer.Exit(1)
        typer.echo(f"audit log intact: {verdict.count} record(s), head hash {verdict.head} "
                   "(keep this hash elsewhere to detect a rewrite of the whole log)")
        return
    try:
        records = read_audit(work_dir)
    except AuditLogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not records:
        typer.echo(f"no messages have left this site ({work_dir.resolve() / AUDIT_FILE} is empty or missing)")
        return
    total = 0
    for record in records:
        total += int(record.get("bytes", 0))
        if as_json:
            typer.echo(json.dumps(record, sort_keys=True))
            continue
        scalars = [k for k in record.get("keys", []) if k not in record.get("arrays", {})]
        typer.echo(
            f"{record['time']}  run {record['run_id']}  {record['phase']:<12} {record.get('status', 'reply'):<7} "
            f"{record.get('bytes', 0):>9} B  arrays: {_shapes(record)}  values: {', '.join(scalars) or '-'}"
        )
    if not as_json:
        typer.echo(f"{len(records)} message(s), {total} bytes in total")
