"""``python -m kdiff.fid PATH_A PATH_B``: see :mod:`kdiff.fid.cli`."""

import sys

from kdiff.fid.cli import main

if __name__ == "__main__":
    sys.exit(main())
