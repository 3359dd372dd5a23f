"""``python -m kdiff.kernels``: builds kdiff's fused kernels now and says where they are,
or why they cannot be used here (exit status 1)."""

import sys

from kdiff import kernels


def main():
    """Builds every kernel; prints one status line each.

    Returns:
        0 when every kernel is usable here, else 1.
    """
    lines = [kernels.status(name) for name in kernels.KERNELS]
    print("\n".join(lines))
    return 0 if all(": built," in line for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
