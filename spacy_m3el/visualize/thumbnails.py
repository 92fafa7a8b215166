"""Images as small inline JPEG thumbnails, under a byte budget per report."""

import base64
import io
import re
from typing import Any, Dict, Optional, Tuple

from ..images import ImageLoadError, load_image

DEFAULT_SIDE = 96
DEFAULT_BUDGET = 8 * 1024 * 1024


class Thumbnails:
    """Make ``data:`` URIs of images, each at most ``side`` pixels, until ``budget`` bytes
    are spent; later images are left out (the page says so) rather than growing the file.
    Every use of a thumbnail counts, since each copy is written into the page.

    side (int): Longest side of a thumbnail, in pixels.
    budget (int): Bytes of thumbnail data per report.
    quality (int): JPEG quality.
    """

    def __init__(self, side: int = DEFAULT_SIDE, budget: int = DEFAULT_BUDGET, quality: int = 70):
        self.side = side
        self.budget = budget
        self.quality = quality
        self.spent = 0
        self.omitted = 0
        self._memo: Dict[Any, Tuple[Optional[str], Optional[str]]] = {}

    def uri(self, value: Any, key: Any = None) -> Tuple[Optional[str], Optional[str]]:
        """``(data URI, None)`` for a decodable image, else ``(None, reason)``.

        key: Reuse the thumbnail of an image already made under this key (a KB ID).
        """
        if key is not None and key in self._memo:
            result = self._memo[key]
        else:
            result = self._make(value)
            if key is not None:
                self._memo[key] = result
        return self._spend(result)

    def _spend(self, result: Tuple[Optional[str], Optional[str]]):
        uri = result[0]
        if uri is None:
            return result
        if self.spent + len(uri) > self.budget:
            self.omitted += 1
            return None, "thumbnail left out (report size cap)"
        self.spent += len(uri)
        return result

    def _make(self, value: Any) -> Tuple[Optional[str], Optional[str]]:
        if value is None:
            return None, "no image"
        try:
            image = value if hasattr(value, "thumbnail") else load_image(value)
        except ImageLoadError as err:
            # PIL names the stream object with its address; keep pages reproducible.
            return None, "unreadable: " + re.sub(r" at 0x[0-9a-fA-F]+", "", str(err))
        image = image.convert("RGB").copy()
        image.thumbnail((self.side, self.side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f"data:image/jpeg;base64,{data}", None
