"""The ``tcsim`` argument parser: one subcommand per command module, every --help showing the
defaults."""

from __future__ import annotations

import argparse

from . import corpus, demo, explain, fit, gemm, mma, models, sweep, train, validate

# in the order ``tcsim --help`` lists them
COMMANDS = (demo, mma, gemm, sweep, train, explain, corpus, fit, models, validate)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tcsim``; each subcommand's parsed namespace holds its handler as
    ``func``."""
    parser = argparse.ArgumentParser(
        prog="tcsim", description="Bit-exact simulator of GPU matrix-unit accumulation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for p in all_parsers(parser):
        p.formatter_class = HelpFormatter
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every --help shows the defaults; options without one (None, or off flags) say nothing."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def all_parsers(parser: argparse.ArgumentParser) -> list:
    """The parser and every subcommand's parser, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(all_parsers(sub))
    return found
