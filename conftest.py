"""Session-wide settings for the tests and the doctests: no hub access, a throw-away signing key."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# checkpoints and policies are signed with a local key (mixgym.trust): never the user's own
os.environ["MIXGYM_KEY_FILE"] = str(Path(tempfile.mkdtemp(prefix="mixgym-test-key-")) / "signing.key")
# Minari datasets written by tests and doctests go to a throw-away root, never ~/.minari
os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="mixgym-test-minari-")
