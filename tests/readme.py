"""README's command blocks, read as the tests run them word for word."""

from __future__ import annotations

import re

from .servers import REPO


def deploy_block(marker: str) -> str:
    """The bash block that follows `<!-- deploy: MARKER ... -->` in README.md."""
    readme = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- deploy: {marker}\b.*?-->\n```bash\n(.*?)```", readme, re.DOTALL)
    assert found, f"README.md has no deploy: {marker} block"
    return found[1]
