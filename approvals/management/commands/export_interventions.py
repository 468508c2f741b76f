from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.models import Agent
from approvals import export
from audit.services import Actor


class Command(BaseCommand):
    help = (
        "Export the reviewed and spot-checked actions as JSON Lines (secrets scrubbed), for evaluation and "
        "fine-tuning. Writes to stdout unless -o is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", default="", help="an agent's slug")
        parser.add_argument("--tool", default="", help="a tool's name")
        parser.add_argument("--since", default="", help="created at or after (ISO 8601; UTC unless it says)")
        parser.add_argument("--until", default="", help="created before (ISO 8601; a bare date takes in that day)")
        parser.add_argument("--outcome", default="", help=f"one of {', '.join(export.OUTCOMES)}")
        parser.add_argument("--source", default="", help=f"one of {', '.join(export.SOURCES)}")
        parser.add_argument("-o", "--output", default="", help="write to this file (replaced whole, at the end)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            filters = export.parse_filters(
                {name: options[name] for name in ("agent", "tool", "since", "until", "outcome", "source")}
            )
        except export.InvalidFilter as exc:
            raise CommandError(str(exc)) from exc
        agent_id = None
        if filters.agent:
            agent_id = Agent.objects.filter(slug=filters.agent).values_list("pk", flat=True).first()
            if agent_id is None:
                raise CommandError(f"agent: no agent has the slug {filters.agent!r}")
        # Whoever may run manage.py reads the database anyway: the command exports every agent.
        export.export_recorded(actor=Actor.system("export_interventions"), filters=filters, agent_id=agent_id)
        lines = export.jsonl(filters)
        if not options["output"]:
            for line in lines:
                self.stdout.write(line, ending="")
            return
        target = Path(options["output"])
        partial = target.with_name(target.name + ".partial")
        count = 0
        try:
            # Written aside and moved into place at the end: an export that fails half-way leaves no half file.
            with partial.open("w", encoding="utf-8") as out:
                for line in lines:
                    out.write(line)
                    count += 1
            os.replace(partial, target)
        except OSError as exc:
            raise CommandError(f"cannot write {target}: {exc.strerror}") from exc
        finally:
            partial.unlink(missing_ok=True)  # gone already once moved into place
        self.stderr.write(f"{count} action(s) written to {target}")
