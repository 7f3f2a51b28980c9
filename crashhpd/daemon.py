"""Placeholder replaced by the daemon."""
import argparse


def add_run_parser(sub: "argparse._SubParsersAction") -> None:
    pass
