"""Side-by-side comparison images with captions (method name, PSNR/SSIM), for ``renderfm compare``.

Text is drawn with Pillow (installed with imageio, a dependency) in its built-in font: no font files needed.
"""

from __future__ import annotations

import numpy as np

#: Caption text size in pixels, caption line height and the gap between panels.
FONT_SIZE = 11
LINE_HEIGHT = 14
GAP = 4


def captioned_row(panels: list[tuple[np.ndarray, list[str]]], background=(24, 24, 24),
                  text_colour=(235, 235, 235)) -> np.ndarray:
    """Panels side by side, each under its caption lines.

    ``panels``: ``(image, lines)`` pairs; images are uint8 ``[H, W, 3]`` of one height, ``lines`` short strings
    (one caption line each; long lines are clipped to the panel). Returns uint8 ``[H + caption, width, 3]`` with
    :data:`GAP` pixels between panels.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not panels:
        raise ValueError("need at least one panel")
    height = panels[0][0].shape[0]
    if any(image.shape[0] != height or image.ndim != 3 or image.shape[2] != 3 for image, _ in panels):
        raise ValueError("panels must be [H, W, 3] images of one height")
    caption = LINE_HEIGHT * max(len(lines) for _, lines in panels) + 4
    width = sum(image.shape[1] for image, _ in panels) + GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height + caption), tuple(background))
    font = ImageFont.load_default(size=FONT_SIZE)
    x = 0
    for image, lines in panels:
        canvas.paste(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)), (x, caption))
        panel = Image.new("RGB", (image.shape[1], caption), tuple(background))
        panel_draw = ImageDraw.Draw(panel)
        for row, line in enumerate(lines):
            panel_draw.text((3, 2 + row * LINE_HEIGHT), line, fill=tuple(text_colour), font=font)
        canvas.paste(panel, (x, 0))
        x += image.shape[1] + GAP
    return np.asarray(canvas)
