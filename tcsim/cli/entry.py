"""``main``: run one ``tcsim`` command; bad input is one ``tcsim: error:`` line and exit status
2, never a traceback."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..errors import TcsimError
from .parser import build_parser


def fail(error) -> int:
    """Print ``error`` as one line on stderr (several lines joined with '; '); exit status 2."""
    message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    print(f"tcsim: error: {message}", file=sys.stderr)
    return 2


# Exit status when the reader of stdout went away (``tcsim mma ... | head``): 128 + SIGPIPE,
# what a shell reports for a program killed by the broken pipe.
EXIT_BROKEN_PIPE = 141


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tcsim ARGV`` (default: ``sys.argv[1:]``) and return its exit status: the
    command's, 2 for bad input (one line on stderr), 141 when stdout's reader went away."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader stopped reading: exit quietly, with stdout pointed at devnull so that
        # Python's final flush does not complain either
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except MemoryError as exc:
        # numpy's says how much one array needed ("Unable to allocate 3.64 TiB for an array
        # with shape (1000000, 1000000) ...")
        return fail(f"not enough memory: {str(exc) or 'an allocation failed'}")
    except (TcsimError, OSError) as exc:
        # what is wrong and with which file or argument (OSError: a file the operating system
        # refused, e.g. a folder given where a file goes)
        return fail(exc)
