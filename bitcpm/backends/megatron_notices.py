"""Known-harmless megatron-core warnings, hidden once by the entry points that import megatron (worker, bench).

megatron-core warns at import time that Apex and Transformer Engine are absent and that it falls back to
its own implementations (always the case on CPU, and a supported setup elsewhere), and that its own
default cuda_graph_scope is deprecated. Nothing else is filtered; library code never filters warnings.
"""

from __future__ import annotations

import warnings

HARMLESS = (
    r".*(Transformer Engine|Apex) (and Apex )?(is|are) not installed.*",
    r"full scope is deprecated.*cuda_graph_scope.*",
)


def hide_known_warnings() -> None:
    """Ignore megatron-core's fallback notices (UserWarning) in this process."""
    for pattern in HARMLESS:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
