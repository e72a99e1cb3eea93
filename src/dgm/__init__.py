"""dgm: the package behind the course book on deep generative models.

Every model is a :class:`dgm.base.GenerativeModel` with ``loss(x)``,
``sample(n)`` and ``log_prob(x)`` (or a bound such as ``elbo(x)``); every data
set comes from :func:`dgm.data.load`; every family trains with
:func:`dgm.train.fit`; ``python -m dgm`` is the command line.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

_ON = ("1", "on", "true", "yes")
_OFF = ("", "0", "off", "false", "no")


def env_flag(name: str) -> bool:
    """Read an on/off environment variable: ``1/on/true/yes`` or ``0/off/false/no`` (any case; unset is off).

    Anything else raises ``ValueError`` naming the variable and the accepted values, rather than
    guessing (``DGM_QUICK=off`` must not turn quick mode on).
    """
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{name}={raw!r} is not understood; use 1, on, true or yes to turn it on "
                     f"and 0, off, false or no (or unset it) to turn it off")


def progress_setting() -> str:
    """``DGM_PROGRESS`` as ``"auto"`` (unset, or 1/on/true/yes: a bar where someone can see it),
    ``"text"`` (a text bar even in a notebook) or ``"off"`` (0/off/false/no); anything else raises."""
    raw = os.environ.get("DGM_PROGRESS", "auto")
    value = raw.strip().lower()
    if value in ("auto", "text"):
        return value
    if value in _OFF and value:
        return "off"
    if value in _ON:
        return "auto"
    raise ValueError(f"DGM_PROGRESS={raw!r} is not understood; use auto (the default), on, text or off")


def quick_mode() -> bool:
    """True when ``DGM_QUICK`` is on (``1/on/true/yes``; see :func:`env_flag`).

    Notebooks read this to run small (CI, tests); readers and the book get the
    full run by default.
    """
    return env_flag("DGM_QUICK")


def live_notebook() -> bool:
    """True in a notebook that a person is running, where widgets and progress bars work.

    False in scripts and in every unattended execution of a notebook (the book build, nbmake,
    nbconvert, papermill): those run cells through nbclient, which never allows input, so the
    kernel's current request has ``allow_stdin`` off, while JupyterLab, Notebook and VS Code allow it.
    """
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    kernel = getattr(shell, "kernel", None)
    return kernel is not None and bool(getattr(kernel, "_allow_stdin", True))
