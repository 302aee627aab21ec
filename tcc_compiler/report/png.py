"""Matplotlib figures as self-contained PNG ``data:`` URIs (the report page needs no other file)."""

from __future__ import annotations

import base64
import io


def png_data_uri(fig, dpi: int = 90) -> str:
    """Render ``fig`` (a matplotlib Figure) as a PNG at ``dpi`` and close it.

    Returns:
        ``"data:image/png;base64,..."``, for an ``<img src>``.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
