"""The environment variables Baton's code reads, found in its source."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS_DIR = ROOT / "controlplane" / "settings"

# env("X"), env.int("X"), ... through django-environ; the settings' helpers that also read X_FILE
# (secret, database, mail); and os.environ itself.
_ENV_CALL = re.compile(r"""\benv(?:\.[a-z_]+)?\(\s*["']([A-Z][A-Z0-9_]*)["']""")
_FILE_READING_CALL = re.compile(r"""\b(?:secret|database|mail)\(\s*["']([A-Z][A-Z0-9_]*)["']""")
_OS_ENVIRON = re.compile(r"""\bos\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")


def names_read(sources: list[Path]) -> set[str]:
    names = set()
    for source in sources:
        text = source.read_text()
        names.update(_ENV_CALL.findall(text))
        names.update(_OS_ENVIRON.findall(text))
        for name in _FILE_READING_CALL.findall(text):
            names.update({name, f"{name}_FILE"})
    return names


def settings_names() -> set[str]:
    return names_read(sorted(SETTINGS_DIR.glob("*.py")))
