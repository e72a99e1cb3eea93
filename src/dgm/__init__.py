"""dgm: the package behind the course book on deep generative models.

Every model is a :class:`dgm.base.GenerativeModel` with ``loss(x)``,
``sample(n)`` and ``log_prob(x)`` (or a bound such as ``elbo(x)``); every data
set comes from :func:`dgm.data.load`; every family trains with
:func:`dgm.train.fit`; ``python -m dgm`` is the command line.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def quick_mode() -> bool:
    """True when ``DGM_QUICK`` is set to anything but ``""``/``0``/``false``.

    Notebooks read this to run small (CI, tests); readers and the book get the
    full run by default.
    """
    return os.environ.get("DGM_QUICK", "").strip().lower() not in ("", "0", "false", "no")
