"""No request leaves the machine from mixgym's Hugging Face path, whatever the environment says.

`datasets`, `transformers` and `huggingface_hub` contact the Hub (and S3) unless told they are
offline, and they read the switches (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``,
``TRANSFORMERS_OFFLINE``) from the environment *when they are imported*. mixgym reads only
local files, so `force_offline` -- called before mixgym imports any of them -- sets the three
variables to 1 for this process and, for a library a user imported before, its own switch too.
Calls that take ``local_files_only`` are given it as well.

This is a process-wide setting: after mixgym has loaded a corpus or built an HF backend, other
code in the same process cannot download from the Hub either (start it in another process, or
before mixgym's HF path runs).
"""

from __future__ import annotations

import os
import sys

SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def force_offline() -> None:
    """Switch the Hugging Face libraries of this process to offline mode (module docstring)."""
    for name in SWITCHES:
        os.environ[name] = "1"
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
        datasets_config.HF_DATASETS_OFFLINE = True
