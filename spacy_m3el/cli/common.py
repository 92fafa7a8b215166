"""What every command module shares: the error type and the signatures."""

import argparse
from typing import Callable

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A user error with a message to print."""
