"""Where the repository's files are, for a test in any folder of tests/.

``REPO`` is the repository root (README.md, docs/, kdiff/, pipeline/, saved_models/),
``TESTS`` this folder (the shared helpers, importable by name from any test) and
``FIXTURES`` tests/fixtures/. Tests import these instead of counting ``os.path.dirname``s
from their own ``__file__``, which would change whenever a test file moves.
"""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
FIXTURES = os.path.join(TESTS, "fixtures")
