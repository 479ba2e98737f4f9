"""The root `reachrank` command: subcommands load lazily so each needs only its own extras.

`reachrank client ...` works with only the SDK installed; `reachrank serve` without the
server's packages says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a subcommand lives and what it needs, known without importing it."""

    import_path: str  # "package.module:attribute"
    help: str
    extra: str | None  # pip extra providing its dependencies; None: the SDK suffices


COMMANDS: dict[str, LazyCommand] = {
    "simulate": LazyCommand("training.cli:simulate", "Simulate a marketplace event log.", "train"),
    "train": LazyCommand("training.cli:train", "Train the models of a repository.", "train"),
    "serve": LazyCommand("engine.cli:serve", "Serve a model repository over gRPC.", "serve"),
    "client": LazyCommand("clients.commands:client", "Call a running server.", None),
    "forget-user": LazyCommand(
        "clients.commands:forget_user", "Admin: erase a user (right to be forgotten).", None
    ),
    "loadtest": LazyCommand(
        "clients.loadtest_cli:loadtest", "Load-test a server and report latency.", None
    ),
    "ab-report": LazyCommand(
        "training.ab_cli:ab_report", "Report A/B experiments from a feedback log.", "train"
    ),
    "ope-report": LazyCommand(
        "training.decisions_cli:ope_report",
        "Off-policy evaluation of a candidate model on the decision log.",
        "train",
    ),
    "campaign": LazyCommand(
        "training.uplift.cli:campaign", "Plan a campaign from an uplift model.", "train"
    ),
    "campaign-report": LazyCommand(
        "training.uplift.cli:campaign_report", "Measured lift of campaigns vs control.", "train"
    ),
}


def _unavailable(name: str, spec: LazyCommand, error: ModuleNotFoundError) -> click.Command:
    """A stand-in that accepts any arguments and explains what to install."""
    hint = f"pip install 'reachrank[{spec.extra}]'" if spec.extra else "reinstall reachrank"

    def explain(**_: Any) -> None:
        raise click.ClickException(
            f"`reachrank {name}` needs packages that are not installed ({error}): {hint}"
        )

    return click.Command(
        name,
        callback=explain,
        help=spec.help,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked."""

    def __init__(self, *args: Any, lazy: dict[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = self.lazy.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = spec.import_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            return _unavailable(cmd_name, spec, error)
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{spec.import_path} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the registry: `reachrank --help` must not import torch.
        rows = [(name, spec.help) for name, spec in sorted(self.lazy.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="reachrank")
def main() -> None:
    """ReachRank: recommendation and ad ranking served over gRPC."""
